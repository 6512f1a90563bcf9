"""The owner's side of the VMM zygote (``pytest_microsandbox.vmm.zygote``): started on first use, once per process
(a forked child starts its own), and asked for one VMM per vm sandbox. Each VMM comes back as a ``ForkedProcess``:
not our child (the zygote forked and reaps it), watched and killed through its pidfd, which names that process and
no later one."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

from pytest_microsandbox.errors import SandboxError
from pytest_microsandbox.sandbox._backend import on_spawner_thread
from pytest_microsandbox.vmm.spec import VmSpec, encode
from pytest_microsandbox.vmm.zygote import receive_message, send_message, socket_pair


class ForkedProcess:
    """A VMM the zygote forked: ``pid``, whether it has ended, and SIGKILL."""

    def __init__(self, pid: int, pidfd: int, start_ticks: int | None = None) -> None:
        self.pid = pid
        self.start_ticks = start_ticks  # read by the zygote before it could reap it: names this process only
        self._pidfd = pidfd

    def ended(self, timeout: float | None = 0) -> bool:
        """Whether it has exited, waiting up to ``timeout`` seconds (None: until it does)."""
        if self._pidfd < 0:
            return True
        poller = select.poll()
        poller.register(self._pidfd, select.POLLIN)
        return bool(poller.poll(None if timeout is None else max(0, int(timeout * 1000))))

    def kill(self) -> None:
        if self._pidfd < 0:
            return  # closed: not ours to signal any more
        try:
            signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass  # exited already

    def close(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1

    def __del__(self) -> None:
        self.close()


class Zygote:
    """A running zygote and our end of its socket."""

    def __init__(self) -> None:
        ours, theirs = socket_pair()
        argv = ["setpriv", "--pdeathsig", "KILL", "--", sys.executable, "-m", "pytest_microsandbox.vmm.zygote",
                "--fd", str(theirs.fileno())]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).parents[2]),
                                                                          os.environ.get("PYTHONPATH")]))}
        try:
            self.process = on_spawner_thread(lambda: subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, pass_fds=[theirs.fileno()],
                start_new_session=True, env=env))
        except OSError as e:
            ours.close()
            raise SandboxError(f"cannot start the VMM zygote: {e}") from e
        finally:
            theirs.close()
        self.sock = ours
        self.lock = threading.Lock()

    def alive(self) -> bool:
        return self.process.poll() is None

    def spawn(self, spec: VmSpec, host_end: socket.socket, log_fd: int) -> ForkedProcess:
        """A VMM for ``spec``, relaying the agent to ``host_end``, its output appended to ``log_fd``."""
        with self.lock:
            try:
                send_message(self.sock, {"spec": encode(spec)}, [host_end.fileno(), log_fd])
                reply, fds = receive_message(self.sock, max_fds=1)
            except (OSError, EOFError, ValueError) as e:
                code = self.process.poll()
                raise SandboxError(f"the VMM zygote is gone ({e or 'it closed its socket'}"
                                   f"{f', exit code {code}' if code is not None else ''})") from None
        if "error" in reply or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise SandboxError(f"the VMM zygote could not start a VMM: {reply.get('error', reply)}")
        return ForkedProcess(int(reply["pid"]), fds[0], reply.get("start_ticks"))

    def close(self) -> None:
        """End the zygote (and so every VMM it forked)."""
        self.sock.close()
        self.process.kill()
        self.process.wait()


_zygote: tuple[int, Zygote] | None = None
_zygote_lock = threading.Lock()


def _forget_after_fork() -> None:
    """A forked child starts its own zygote; a lock another thread held at the fork stays held there: new one."""
    global _zygote_lock
    _zygote_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def zygote() -> Zygote:
    """This process's zygote, started (about as long as one VMM process took before) on first use or after it died."""
    global _zygote
    with _zygote_lock:
        if _zygote is not None and _zygote[0] == os.getpid() and not _zygote[1].alive():
            _zygote[1].close()  # it died: reap it and close our end
        if _zygote is None or _zygote[0] != os.getpid() or not _zygote[1].alive():
            _zygote = (os.getpid(), Zygote())
        return _zygote[1]


def prestart_vmm() -> None:
    """Start this process's VMM zygote now, so that its imports overlap other work (pytest's collection) instead of
    delaying the first vm sandbox. Nothing happens on a host whose KVM cannot run a guest."""
    from _vmcore.host import detect_kvm

    if detect_kvm().runs_guest_userspace:
        zygote()
