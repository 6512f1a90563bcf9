"""Malformed, unknown and oversized frames against the native agent: each gets an ERROR, none kills it."""

from __future__ import annotations

import errno
import struct
import time

from agent_harness import NativeAgent, RawPeer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_microsandbox.agent._wire import (
    HEADER,
    MAX_PAYLOAD,
    Fields,
    Msg,
    ProtoError,
    Tag,
    encode_fields,
    encode_frame,
)


def error_code(frame) -> int:
    assert frame.type == Msg.ERROR, frame
    return Fields(frame.payload).int(Tag.CODE)


def assert_alive(raw: RawPeer, stream: int = 999) -> None:
    raw.send(encode_frame(Msg.PING, stream, b"still there?"))
    frame = raw.recv()
    while frame.stream != stream:  # skip answers still in flight
        frame = raw.recv()
    assert (frame.type, frame.payload) == (Msg.PONG, b"still there?")


def test_unknown_type(raw: RawPeer) -> None:
    raw.send(encode_frame(0x7E, 5, b"whatever"))
    frame = raw.recv()
    assert frame.stream == 5 and error_code(frame) == ProtoError.UNKNOWN_TYPE
    assert_alive(raw)


def test_agent_only_types_from_the_host_are_unknown(raw: RawPeer) -> None:
    raw.send(encode_frame(Msg.STDOUT, 6, b"x"))
    assert error_code(raw.recv()) == ProtoError.UNKNOWN_TYPE


def test_error_frames_are_never_answered(raw: RawPeer) -> None:
    raw.send(encode_frame(Msg.ERROR, 7, b"junk"))
    assert_alive(raw)  # the PONG is the first thing that comes back


def test_bad_version(raw: RawPeer) -> None:
    raw.send(encode_frame(Msg.PING, 8, b"x", version=9))
    assert error_code(raw.recv()) == ProtoError.BAD_VERSION
    assert_alive(raw)


def test_oversized_frame_is_refused_and_skipped(raw: RawPeer) -> None:
    size = MAX_PAYLOAD + 1
    raw.send(HEADER.pack(1, Msg.EXEC, 0, 9, size) + b"\xab" * size)
    frame = raw.recv()
    assert frame.stream == 9 and error_code(frame) == ProtoError.FRAME_TOO_LARGE
    assert_alive(raw)


def test_huge_length_header_then_hangup(native_agent: NativeAgent, raw: RawPeer) -> None:
    raw.send(HEADER.pack(1, Msg.PING, 0, 10, 0xFFFFFFFF) + b"partial")
    assert error_code(raw.recv()) == ProtoError.FRAME_TOO_LARGE
    native_agent.stop()
    assert native_agent.proc.returncode == 0


def test_truncated_fields(raw: RawPeer) -> None:
    bad = struct.pack("<HI", Tag.ARG, 100) + b"short"
    raw.send(encode_frame(Msg.EXEC, 11, bad))
    assert error_code(raw.recv()) == ProtoError.MALFORMED


def test_exec_without_argv(raw: RawPeer) -> None:
    raw.send(encode_frame(Msg.EXEC, 12, encode_fields([(Tag.CWD, "/")])))
    assert error_code(raw.recv()) == ProtoError.MALFORMED


def test_bad_int_field(raw: RawPeer) -> None:
    raw.send(encode_frame(Msg.EXEC, 13, encode_fields([(Tag.ARG, "true"), (Tag.TIMEOUT_MS, b"\x01\x02")])))
    assert error_code(raw.recv()) == ProtoError.MALFORMED


def test_nul_in_argument(raw: RawPeer) -> None:
    raw.send(encode_frame(Msg.EXEC, 14, encode_fields([(Tag.ARG, b"ec\x00ho")])))
    assert error_code(raw.recv()) == ProtoError.MALFORMED


def test_request_on_stream_zero(raw: RawPeer) -> None:
    raw.send(encode_frame(Msg.EXEC, 0, encode_fields([(Tag.ARG, "true")])))
    assert error_code(raw.recv()) == ProtoError.MALFORMED


def test_stream_in_use(raw: RawPeer) -> None:
    req = encode_fields([(Tag.ARG, "sleep"), (Tag.ARG, "5")])
    raw.send(encode_frame(Msg.EXEC, 20, req) + encode_frame(Msg.EXEC, 20, req))
    assert raw.recv().type == Msg.STARTED
    assert error_code(raw.recv()) == ProtoError.STREAM_IN_USE
    raw.send(encode_frame(Msg.KILL, 20, b""))
    assert raw.recv().type == Msg.EXIT


def test_input_for_unknown_streams(raw: RawPeer) -> None:
    for t in (Msg.STDIN, Msg.STDIN_CLOSE, Msg.KILL, Msg.DATA, Msg.DATA_END):
        raw.send(encode_frame(t, 4242, b"x"))
        assert error_code(raw.recv()) == ProtoError.NO_STREAM


def test_stdin_after_close(raw: RawPeer) -> None:
    raw.send(encode_frame(Msg.EXEC, 21, encode_fields([(Tag.ARG, "cat"), (Tag.STDIN_MODE, 1)])))
    assert raw.recv().type == Msg.STARTED
    raw.send(encode_frame(Msg.STDIN_CLOSE, 21) + encode_frame(Msg.STDIN, 21, b"late"))
    frames = [raw.recv(), raw.recv()]
    types = sorted(f.type for f in frames)
    assert types == [Msg.ERROR, Msg.EXIT]
    assert error_code(next(f for f in frames if f.type == Msg.ERROR)) in (ProtoError.BAD_STATE, ProtoError.NO_STREAM)


def test_split_frames_byte_by_byte(raw: RawPeer) -> None:
    data = encode_frame(Msg.PING, 30, b"slow")
    for b in data:
        raw.send(bytes([b]))
    frame = raw.recv()
    assert (frame.type, frame.stream, frame.payload) == (Msg.PONG, 30, b"slow")


# Requests that would change the host (remove, write, mkdir, run a command named by random bytes) stay out of the
# noise: the native agent runs with this test's privileges.
_HARMLESS = sorted(set(Msg) - {Msg.SHUTDOWN, Msg.FS_REMOVE, Msg.FS_WRITE, Msg.FS_MKDIR})

_frames = st.builds(
    lambda version, type_, stream, payload: HEADER.pack(version, type_, 0, stream, len(payload)) + payload,
    st.sampled_from([1, 1, 1, 0, 2, 255]),
    st.sampled_from(_HARMLESS + [0, 0x7F, 0xFF]),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=300)
    | st.lists(st.tuples(st.integers(2, 60), st.binary(max_size=40)), max_size=6).map(encode_fields),  # no ARG
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=st.lists(_frames, min_size=1, max_size=8))
def test_random_frames_never_kill_the_agent(native_agent: NativeAgent, raw: RawPeer, frames: list[bytes]) -> None:
    # anything a random EXEC might start is killed and reaped by the agent when the test ends
    for f in frames:
        raw.send(f)
    assert_alive(raw, stream=0xDEAD)
    assert native_agent.proc.poll() is None


def _rss_kib(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_backpressure_bounds_agent_memory(native_agent: NativeAgent, raw: RawPeer) -> None:
    size = 256 << 20
    assert_alive(raw)
    baseline = _rss_kib(native_agent.proc.pid)
    raw.send(
        encode_frame(
            Msg.EXEC,
            40,
            encode_fields([(Tag.ARG, "head"), (Tag.ARG, "-c"), (Tag.ARG, str(size)), (Tag.ARG, "/dev/zero")]),
        )
    )
    time.sleep(1.0)  # we read nothing: the agent must stop reading the command, not buffer 256 MiB
    assert _rss_kib(native_agent.proc.pid) - baseline < 48 * 1024  # a few MiB queued (sanitizer builds: more)
    got, exit_frame = 0, None
    while exit_frame is None:
        frame = raw.recv(30)
        if frame.type == Msg.STDOUT:
            got += len(frame.payload)
        elif frame.type == Msg.EXIT:
            exit_frame = frame
    assert got == size and Fields(exit_frame.payload).int(Tag.EXIT_CODE) == 0


def test_more_requests_than_streams(raw: RawPeer) -> None:
    n = 600  # over the agent's 512 live streams (and, natively, maybe over its fd limit)
    sleep = encode_fields([(Tag.ARG, "sleep"), (Tag.ARG, "1")])
    raw.send(b"".join(encode_frame(Msg.EXEC, 1000 + i, sleep) for i in range(n)))
    started, refused, exited = set(), set(), set()
    while len(exited) + len(refused) < n:
        frame = raw.recv(60)
        if frame.type == Msg.STARTED:
            started.add(frame.stream)
        elif frame.type == Msg.EXIT:
            exited.add(frame.stream)
        else:
            assert frame.type == Msg.ERROR
            assert Fields(frame.payload).int(Tag.CODE) == errno.EMFILE
            refused.add(frame.stream)
    assert exited == started and len(started) >= 100 and refused and not refused & started
    assert_alive(raw)
