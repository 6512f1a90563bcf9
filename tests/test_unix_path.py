"""Sockets in directories deeper than an address holds (107 bytes) are still bound and reached."""

from __future__ import annotations

import socket
from pathlib import Path

from pytest_microsandbox._unix_path import bind_unix, connect_unix


def test_a_socket_deeper_than_an_address_holds_is_bound_and_reached(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "agent.sock"
    assert len(str(path)) > 107
    with socket.socket(socket.AF_UNIX) as listener, socket.socket(socket.AF_UNIX) as client:
        bind_unix(listener, path)
        listener.listen(1)
        assert path.is_socket()  # at its real path, not under /proc
        connect_unix(client, path)
        server, _ = listener.accept()
        with server:
            client.sendall(b"ping")
            assert server.recv(4) == b"ping"
