"""Unix socket addresses hold 107 bytes: a socket in a deep home (a long temporary directory, say) is reached
through its directory's descriptor instead, ``/proc/self/fd/N/NAME``, which names the same file."""

from __future__ import annotations

import os
import socket
from pathlib import Path

MAX_ADDRESS = 107


def _via_directory(sock: socket.socket, path: Path, act) -> None:
    if len(os.fsencode(path)) <= MAX_ADDRESS:
        act(str(path))
        return
    directory = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        act(f"/proc/self/fd/{directory}/{path.name}")
    finally:
        os.close(directory)


def bind_unix(sock: socket.socket, path: Path) -> None:
    _via_directory(sock, path, sock.bind)


def connect_unix(sock: socket.socket, path: Path) -> None:
    _via_directory(sock, path, sock.connect)
