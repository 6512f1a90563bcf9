"""The guest fs object against the native agent (files in a temp dir of this host)."""

from __future__ import annotations

import errno
import os
import socket

import pytest

from pytest_microsandbox.agent import AgentClient
from pytest_microsandbox.errors import (
    AgentTimeoutError,
    GuestFileExistsError,
    GuestFileNotFoundError,
    GuestIsADirectoryError,
    GuestOSError,
    InvalidConfigError,
    MicrosandboxError,
)


def test_write_read_round_trip(client: AgentClient, tmp_path) -> None:
    data = os.urandom(3 << 20) + b"tail"
    path = str(tmp_path / "deep" / "er" / "blob.bin")
    assert client.fs.write(path, data) == len(data)
    assert client.fs.read(path) == data
    assert (tmp_path / "deep" / "er" / "blob.bin").read_bytes() == data


def test_write_text_mode_and_append(client: AgentClient, tmp_path) -> None:
    path = str(tmp_path / "t.txt")
    client.fs.write(path, "one\n", mode=0o600)
    client.fs.write(path, "two\n", append=True)
    assert client.fs.read_text(path) == "one\ntwo\n"
    assert client.fs.stat(path).mode == 0o600


def test_empty_file(client: AgentClient, tmp_path) -> None:
    path = str(tmp_path / "empty")
    assert client.fs.write(path, b"") == 0
    assert client.fs.read(path) == b""


def test_list_and_stat(client: AgentClient, tmp_path) -> None:
    (tmp_path / "a.txt").write_text("abc")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to("a.txt")
    entries = client.fs.list(str(tmp_path))
    assert [(e.path, e.kind) for e in entries] == [
        (f"{tmp_path}/a.txt", "file"),
        (f"{tmp_path}/link", "symlink"),
        (f"{tmp_path}/sub", "dir"),
    ]
    st = client.fs.stat(str(tmp_path / "a.txt"))
    assert (st.kind, st.size) == ("file", 3)
    assert abs(st.modified - (tmp_path / "a.txt").stat().st_mtime) < 1


def test_list_many_entries(client: AgentClient, tmp_path) -> None:
    for i in range(3000):
        (tmp_path / f"file-with-a-longish-name-{i:05d}").touch()
    assert len(client.fs.list(str(tmp_path))) == 3000


def test_exists(client: AgentClient, tmp_path) -> None:
    assert client.fs.exists(str(tmp_path))
    assert not client.fs.exists(str(tmp_path / "missing"))
    assert not client.fs.exists(str(tmp_path / "missing" / "deeper"))


def test_mkdir_and_remove(client: AgentClient, tmp_path) -> None:
    client.fs.mkdir(str(tmp_path / "x" / "y" / "z"))
    client.fs.mkdir(str(tmp_path / "x" / "y" / "z"))  # parents=True: existing is fine
    client.fs.write(str(tmp_path / "x" / "y" / "f"), b"1")
    with pytest.raises(OSError) as info:
        client.fs.remove(str(tmp_path / "x"))
    assert info.value.errno == errno.ENOTEMPTY
    client.fs.remove(str(tmp_path / "x"), recursive=True)
    assert not (tmp_path / "x").exists()


def test_mkdir_without_parents(client: AgentClient, tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        client.fs.mkdir(str(tmp_path / "no" / "parent"), parents=False)
    with pytest.raises(FileExistsError):
        client.fs.mkdir(str(tmp_path), parents=False)


def test_remove_does_not_follow_symlinks(client: AgentClient, tmp_path) -> None:
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious").write_text("x")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "link").symlink_to(keep)
    client.fs.remove(str(victim), recursive=True)
    assert (keep / "precious").read_text() == "x"


def test_errors(client: AgentClient, tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        client.fs.read(str(tmp_path / "missing"))
    with pytest.raises(IsADirectoryError):
        client.fs.read(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        client.fs.list(str(tmp_path / "missing"))
    with pytest.raises(OSError) as info:
        client.fs.read("/dev/zero")  # not a regular file: refused rather than streamed forever
    assert info.value.errno == errno.EINVAL
    with pytest.raises(FileNotFoundError):
        client.fs.write(str(tmp_path / "missing" / "f"), b"x", parents=False)
    with pytest.raises(InvalidConfigError):
        client.fs.read("bad\0path")
    with pytest.raises(InvalidConfigError):
        client.fs.remove("/")
    # the connection is still fine after all that
    assert client.exec("true").exit_code == 0


def test_guest_errors_are_ours_and_keep_the_errno(client: AgentClient, tmp_path) -> None:
    """A refused file request raises our typed error, which is also the built-in OSError for its errno."""
    missing = str(tmp_path / "missing")
    with pytest.raises(GuestFileNotFoundError) as info:
        client.fs.read(missing)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, MicrosandboxError)
    assert (info.value.errno, info.value.filename) == (errno.ENOENT, f"read {missing}")
    with pytest.raises(GuestIsADirectoryError):
        client.fs.read(str(tmp_path))
    with pytest.raises(GuestFileExistsError):
        client.fs.mkdir(str(tmp_path), parents=False)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    with pytest.raises(GuestOSError) as info:
        client.fs.remove(str(tmp_path / "d"))
    assert type(info.value) is GuestOSError and info.value.errno == errno.ENOTEMPTY


def test_failed_write_then_more_work(client: AgentClient, tmp_path) -> None:
    with pytest.raises(IsADirectoryError):
        client.fs.write(str(tmp_path), b"y" * 200_000)  # the DATA frames after the failed open are refused quietly
    client.fs.write(str(tmp_path / "ok"), b"fine")
    assert client.fs.read(str(tmp_path / "ok")) == b"fine"


def test_a_fifo_or_device_is_refused_never_waited_on(client: AgentClient, tmp_path) -> None:
    """Guest code can swap a FIFO in where the host writes its input: the agent must not block on it (it serves every
    stream of the sandbox from one thread)."""
    fifo = tmp_path / "input.txt"
    os.mkfifo(fifo)
    for attempt in (lambda: client.fs.write(str(fifo), b"data"), lambda: client.fs.read(str(fifo)),
                    lambda: client.fs.write(str(fifo), b"more", append=True),
                    lambda: client.fs.write("/dev/null", b"x")):
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EINVAL and "not a regular file" in str(info.value)
    assert client.exec("true").exit_code == 0  # and the agent is still serving


def test_a_request_without_an_answer_raises_a_typed_timeout() -> None:
    ours, silent_guest = socket.socketpair()
    with silent_guest, AgentClient(ours, request_timeout=0.2) as client:
        for request in (lambda: client.fs.read("/etc/hostname"), lambda: client.fs.write("/tmp/f", b"x"),
                        client.hello, lambda: client.fs.list("/")):
            with pytest.raises(AgentTimeoutError, match="did not answer"):
                request()
        with pytest.raises(TimeoutError):  # still a TimeoutError for code that catches the built-in
            client.fs.stat("/")
