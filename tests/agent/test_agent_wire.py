"""The host frame codec: round trips, and a fuzz of the decoder (frames or WireError, never anything else)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pytest_microsandbox.agent as agent_pkg
from pytest_microsandbox.agent._wire import (
    HEADER,
    MAX_PAYLOAD,
    Fields,
    Frame,
    FrameDecoder,
    Tag,
    WireError,
    encode_fields,
    encode_frame,
    iter_fields,
)


def test_all_is_sorted_and_exported() -> None:
    assert agent_pkg.__all__ == sorted(agent_pkg.__all__, key=lambda n: (not n.isupper(), n))
    for name in agent_pkg.__all__:
        assert hasattr(agent_pkg, name)


def test_header_layout() -> None:
    assert encode_frame(0x10, 0x01020304, b"ab") == bytes([1, 0x10, 0, 0, 4, 3, 2, 1, 2, 0, 0, 0]) + b"ab"


def test_encode_refuses_oversized() -> None:
    with pytest.raises(WireError):
        encode_frame(1, 1, b"x" * (MAX_PAYLOAD + 1))


def test_decoder_refuses_oversized_header() -> None:
    with pytest.raises(WireError):
        FrameDecoder().feed(HEADER.pack(1, 2, 0, 3, MAX_PAYLOAD + 1))


def test_fields_round_trip() -> None:
    data = encode_fields([(Tag.ARG, "a"), (Tag.ARG, "b"), (Tag.TIMEOUT_MS, -5), (Tag.ENTRY, [(Tag.NAME, "n")])])
    f = Fields(data)
    assert f.all(Tag.ARG) == [b"a", b"b"]
    assert f.int(Tag.TIMEOUT_MS) == -5
    assert Fields(f.raw(Tag.ENTRY)).str(Tag.NAME) == "n"
    assert f.int(Tag.PID, 7) == 7 and f.str(Tag.CWD) is None


def test_truncated_fields_raise() -> None:
    with pytest.raises(WireError):
        Fields(encode_fields([(Tag.ARG, "abc")])[:-1])
    with pytest.raises(WireError):
        Fields(b"\x01\x00\x00")
    with pytest.raises(WireError):
        Fields(encode_fields([(Tag.PID, b"123")])).int(Tag.PID)


frames = st.builds(
    Frame,
    st.integers(0, 255),
    st.integers(0, 2**32 - 1),
    st.binary(max_size=2000),
    st.integers(0, 255),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(frames, max_size=20), st.lists(st.integers(1, 500), min_size=1, max_size=50))
def test_decoder_round_trip_any_split(items: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(f.encode() for f in items)
    decoder, out, pos, i = FrameDecoder(), [], 0, 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out += decoder.feed(stream[pos : pos + step])
        pos += step
        i += 1
    assert out == items and decoder.buffered == 0


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=10), st.integers(16, MAX_PAYLOAD))
def test_decoder_fuzz(chunks: list[bytes], limit: int) -> None:
    decoder = FrameDecoder(max_payload=limit)
    try:
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                assert len(frame.payload) <= limit
                try:  # every payload either parses as fields or raises WireError
                    list(iter_fields(frame.payload))
                except WireError:
                    pass
    except WireError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=500))
def test_fields_fuzz(payload: bytes) -> None:
    try:
        f = Fields(payload)
    except WireError:
        return
    for tag in (Tag.ARG, Tag.PID, Tag.CODE):
        try:
            f.int(tag)
        except WireError:
            pass
        f.str(tag)


def test_announcement_sync_discards_echo_and_holds_sends() -> None:
    import socket
    import threading

    from pytest_microsandbox.agent import AgentClient
    from pytest_microsandbox.agent._wire import Msg

    ours, peer = socket.socketpair()
    client = AgentClient(ours, await_announcement=True)
    result: list[bytes] = []
    pinger = threading.Thread(target=lambda: result.append(client.ping(b"p")))
    pinger.start()
    peer.settimeout(0.3)
    with pytest.raises(TimeoutError):
        peer.recv(100)  # nothing is sent before the announcement
    announcement = encode_frame(Msg.HELLO_REPLY, 0, encode_fields([(Tag.VERSION, 1), (Tag.PID, 1), (Tag.BOOTED, 1)]))
    echo = b"^A\x01\x81garbage^@^@" + encode_frame(Msg.PING, 7, b"echoed")[:9]  # a tty's echo of early bytes
    peer.sendall(echo + announcement)
    assert client.wait_ready(5).booted
    peer.settimeout(5)
    frames = FrameDecoder().feed(peer.recv(100))
    assert [(f.type, f.payload) for f in frames] == [(Msg.PING, b"p")]
    peer.sendall(encode_frame(Msg.PONG, frames[0].stream, b"p"))
    pinger.join(5)
    assert result == [b"p"]
    client.close()
    peer.close()


def test_real_agent_announces(native_agent) -> None:
    from pytest_microsandbox.agent import AgentClient

    with AgentClient(native_agent.sock, owns_transport=False, await_announcement=True) as client:
        assert client.wait_ready(10).pid == native_agent.proc.pid
        assert client.exec("echo", "ok").stdout == "ok\n"
