"""A detached sandbox owner (what ``msb create`` starts): it creates the sandbox, then relays the agent connection
to one client at a time (others wait their turn) over ``<home>/run/<name>/agent.sock`` until the guest ends.

The relay forwards whole frames only (the 12-byte header says how long each is), so a client that goes away in the
middle of a frame never leaves the agent or the next client out of step. Frames for a departed client are dropped.

    python -m pytest_microsandbox.sandbox._detached_owner HOME -
        # the config as JSON on stdin (env values stay out of ps); prints "ready NAME" or "error MESSAGE"
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import sys
from pathlib import Path

from pytest_microsandbox._unix_path import bind_unix
from pytest_microsandbox.agent._wire import frame_size
from pytest_microsandbox.errors import MicrosandboxError
from pytest_microsandbox.mounts import MountConfig
from pytest_microsandbox.sandbox._config import VmOptions


class FrameBuffer:
    """Bytes in, whole frames out."""

    def __init__(self) -> None:
        self.data = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        self.data += chunk
        frames = []
        while True:
            end = frame_size(self.data)
            if end is None or len(self.data) < end:
                break
            frames.append(bytes(self.data[:end]))
            del self.data[:end]
        return frames


def relay(agent: socket.socket, listener: socket.socket) -> None:
    """Serve until the agent's side closes."""
    sel = selectors.DefaultSelector()
    sel.register(agent, selectors.EVENT_READ, "agent")
    sel.register(listener, selectors.EVENT_READ, "listener")
    client: socket.socket | None = None
    from_agent, from_client = FrameBuffer(), FrameBuffer()
    while True:
        for key, _ in sel.select():
            if key.data == "listener":
                client, _ = listener.accept()
                from_client = FrameBuffer()
                sel.register(client, selectors.EVENT_READ, "client")
                sel.unregister(listener)  # one client at a time: the next waits in the backlog
            elif key.data == "agent":
                chunk = agent.recv(1 << 16)
                if not chunk:
                    return
                for frame in from_agent.feed(chunk):
                    if client is not None:
                        try:
                            client.sendall(frame)
                        except OSError:
                            pass  # it is going: its EOF comes next
            else:
                assert client is not None
                try:
                    chunk = client.recv(1 << 16)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(client)
                    client.close()
                    client = None
                    sel.register(listener, selectors.EVENT_READ, "listener")
                    continue
                for frame in from_client.feed(chunk):
                    agent.sendall(frame)


def serve(home: Path, config_json: str) -> int:
    from pytest_microsandbox.sandbox._config import build_config
    from pytest_microsandbox.sandbox._sandbox import RELAY_SOCKET, Sandbox

    options = json.loads(sys.stdin.read() if config_json == "-" else config_json)
    options["volumes"] = {p: MountConfig.from_dict(m) for p, m in options.get("volumes", {}).items()}
    options["vm"] = VmOptions.from_dict(options.get("vm") or {})
    try:
        sandbox = Sandbox._start(build_config(**options), home, detached=True)
    except MicrosandboxError as e:
        print("error", str(e).replace("\n", " | "), flush=True)
        return 1
    sock_path = sandbox.run_dir / RELAY_SOCKET
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bind_unix(listener, sock_path)
    os.chmod(sock_path, 0o600)
    listener.listen(4)
    print("ready", sandbox.name, flush=True)
    sys.stdout.close()
    try:
        relay(sandbox.detached_socket(), listener)
    finally:
        listener.close()
        sandbox.stop(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1]), sys.argv[2]))
