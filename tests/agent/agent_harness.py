"""Helpers for the native agent tests: the agent compiled for this host, serving over a socketpair."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from pytest_microsandbox.agent._wire import Frame, FrameDecoder

# MSB_TEST_AGENT runs the native tests against another build (e.g. one with -fsanitize=address)
AGENT = Path(os.environ.get("MSB_TEST_AGENT") or Path(__file__).parents[2] / "_vmcore" / "guest" / "bin" / "agent")


class NativeAgent:
    """A running agent process and our end of its socketpair."""

    def __init__(self) -> None:
        if not AGENT.exists():
            pytest.fail(f"{AGENT} is not built: run `python3 setup.py build_ext --inplace`", pytrace=False)
        ours, theirs = socket.socketpair()
        self.sock = ours
        self.proc = subprocess.Popen(
            [str(AGENT), "--fd", str(theirs.fileno())], pass_fds=[theirs.fileno()], stderr=subprocess.PIPE
        )
        theirs.close()

    def stop(self) -> str:
        """End the agent (closing our end makes it exit); return its stderr."""
        try:  # shutdown, not just close: a client's reader thread may still hold the socket
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode(errors="replace")


class RawPeer:
    """Frames by hand, for the malformed-input tests."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = FrameDecoder()
        self.pending: list[Frame] = []
        first = self.recv()  # every agent announces itself first: a HELLO reply on stream 0
        assert (first.type, first.stream) == (0x81, 0), first

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, timeout: float = 10.0) -> Frame:
        self.sock.settimeout(timeout)
        while not self.pending:
            data = self.sock.recv(1 << 16)
            if not data:
                raise EOFError("agent closed the connection")
            self.pending += self.decoder.feed(data)
        return self.pending.pop(0)
