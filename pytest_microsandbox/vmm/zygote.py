"""The VMM zygote: one process per sandbox-creating process that imports the VMM's code and computes what does not
change between sandboxes once (``process.Preloaded``), then forks one VMM per sandbox. A fork costs about a
millisecond and shares the interpreter's pages; a fresh ``python -m`` per sandbox cost 150 ms and 27 MiB.

    python -m pytest_microsandbox.vmm.zygote --fd N      # N: its end of a socketpair with its owner

Wire, over that socket (``sandbox._zygote_client`` is the other side): a request is a 4-byte length and the VM spec as
JSON, with two descriptors (the VMM's end of the agent socketpair, the console log its output goes to); the reply is
a 4-byte length and ``{"pid": N}`` with the VMM's pidfd, or ``{"error": "..."}``. Requests are answered in order.

Lifetimes: the zygote dies with the thread that started it (``setpriv --pdeathsig``) and ends when its owner's end
closes; each VMM dies with the zygote (``PR_SET_PDEATHSIG``), so no VMM outlives the process that created its
sandbox. The zygote reaps its VMMs; their owner watches them through their pidfds.
"""

from __future__ import annotations

import array
import ctypes
import gc
import json
import os
import signal
import socket
import struct
import sys
import traceback

LENGTH = struct.Struct("<I")
MAX_MESSAGE = 1 << 20
PR_SET_PDEATHSIG = 1


def send_message(sock: socket.socket, message: dict, fds: list[int] = ()) -> None:
    data = json.dumps(message).encode()
    sock.sendmsg([LENGTH.pack(len(data)) + data],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])


def receive_message(sock: socket.socket, max_fds: int) -> tuple[dict, list[int]]:
    """One message and the descriptors that came with it. EOFError when the other side has closed."""
    fds = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(LENGTH.size + MAX_MESSAGE, socket.CMSG_SPACE(max_fds * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if not data:
        raise EOFError
    (length,) = LENGTH.unpack_from(data)
    if length != len(data) - LENGTH.size:  # a stream socket: our messages are small enough to come whole
        for fd in fds:
            os.close(fd)
        raise EOFError(f"a torn message ({len(data)} bytes of {length})")
    return json.loads(data[LENGTH.size:]), list(fds)


def _reap(signum=None, frame=None) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _child(control: socket.socket, spec: dict, host_fd: int, log_fd: int, zygote: int, preloaded) -> int:
    from pytest_microsandbox.vmm import process

    control.close()  # only the owner and the zygote hold the control socket
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != zygote:  # it died before the line above: nobody would kill us
        return 1
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    return process.run(socket.socket(fileno=host_fd), spec, preloaded)


def spawn(control: socket.socket, request: dict, fds: list[int], preloaded) -> tuple[dict, list[int]]:
    """Fork the VMM for ``request``'s spec; the reply and the descriptors to send with it."""
    if len(fds) != 2:
        return {"error": f"a spawn request carries 2 descriptors, not {len(fds)}"}, []
    spec = preloaded.resolve(request["spec"])
    zygote = os.getpid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # not reaped before its pidfd exists
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                code = _child(control, spec, fds[0], fds[1], zygote, preloaded)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        return {"pid": pid}, [os.pidfd_open(pid)]
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


def serve(control: socket.socket) -> int:
    from pytest_microsandbox.vmm.process import Preloaded

    preloaded = Preloaded.load()
    gc.freeze()  # what is loaded now stays shared with the VMMs: no collection touches (and copies) its pages
    signal.signal(signal.SIGCHLD, _reap)
    while True:
        try:
            request, fds = receive_message(control, max_fds=2)
        except (EOFError, ConnectionError):
            return 0
        try:
            reply, reply_fds = spawn(control, request, fds, preloaded)
        except Exception as e:  # the request's fault (a bad spec) or the host's (fork): the owner reports it
            reply, reply_fds = {"error": f"{type(e).__name__}: {e}"}, []
        finally:
            for fd in fds:
                os.close(fd)
        try:
            send_message(control, reply, reply_fds)
        except OSError:
            return 0
        finally:
            for fd in reply_fds:
                os.close(fd)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--fd":
        print("usage: python -m pytest_microsandbox.vmm.zygote --fd N", file=sys.stderr)
        sys.exit(2)
    sys.exit(serve(socket.socket(fileno=int(sys.argv[2]))))
