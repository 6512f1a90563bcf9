"""The VMM zygote: one process per sandbox-creating process that imports the VMM's code and computes what does not
change between sandboxes once (``process.Preloaded``), then forks one VMM per sandbox. A fork costs a few
milliseconds and shares the interpreter's pages; a fresh ``python -m`` per sandbox cost 150 ms and 27 MiB.

    python -m pytest_microsandbox.vmm.zygote --fd N      # N: its end of a socketpair with its owner

Wire, over that socket (``SOCK_SEQPACKET``; ``sandbox._zygote_client`` is the other side): a request is a 4-byte
length and ``{"spec": ...}`` as JSON (the spec as ``vmm.spec.encode`` writes it: versioned), with two descriptors
(the VMM's end of the agent socketpair, the console log its output goes to); the reply is a 4-byte length and
``{"pid": N}`` with the VMM's pidfd, or ``{"error": "..."}`` (a spec this side cannot read is one). Requests are
answered in order.

After each reply the zygote forks the next VMM ahead of its request (``Spare``), so a request costs no fork.

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
import select
import signal
import socket
import struct
import sys
import traceback
from collections.abc import Callable, Sequence

from pytest_microsandbox._proc import process_start_ticks
from pytest_microsandbox.vmm.spec import ResolvedSpec, decode, encode

LENGTH = struct.Struct("<I")
MAX_MESSAGE = 1 << 20
PR_SET_PDEATHSIG = 1
SPARE_DELAY = 0.05  # seconds between a reply and the next spare's fork


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """Both ends of a zygote socket: one message per packet, so a message never arrives torn."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send_message(sock: socket.socket, message: dict, fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode()
    sock.sendmsg([LENGTH.pack(len(data)) + data],
                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else [])


def receive_message(sock: socket.socket, max_fds: int) -> tuple[dict, list[int]]:
    """One message and the descriptors that came with it (close-on-exec). EOFError when the other side has closed;
    ValueError for a malformed one (its descriptors closed)."""
    fds = array.array("i")
    data, ancillary, flags, _ = sock.recvmsg(LENGTH.size + MAX_MESSAGE, socket.CMSG_SPACE(max_fds * fds.itemsize),
                                             socket.MSG_CMSG_CLOEXEC)
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[:len(payload) - len(payload) % fds.itemsize])
    if not data:
        raise EOFError
    (length,) = LENGTH.unpack_from(data) if len(data) >= LENGTH.size else (-1,)
    try:
        if length != len(data) - LENGTH.size or flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
            raise ValueError(f"a malformed message ({len(data)} bytes, flags {flags:#x})")
        message = json.loads(data[LENGTH.size:])
        if not isinstance(message, dict):
            raise ValueError("a message is a JSON object")
    except ValueError:
        for fd in fds:
            os.close(fd)
        raise
    return message, list(fds)


def _reap(signum=None, frame=None) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _fork_vmm(control: socket.socket, preloaded, job: Callable[[], tuple[ResolvedSpec, int, int]],
              close_in_child: tuple[socket.socket, ...] = ()) -> tuple[int, int, int]:
    """Fork a VMM that gets its (resolved spec, agent socket, console log) from ``job`` and runs it; its pid, pidfd
    and start time, taken before the child can be reaped (so they name that process and no later one)."""
    zygote = os.getpid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                for sock in (control, *close_in_child):  # only the owner and the zygote hold the control socket
                    sock.close()
                ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
                if os.getppid() == zygote:  # else it died before the line above: nobody would kill us
                    code = _run(preloaded, *job())
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        return pid, os.pidfd_open(pid), process_start_ticks(pid)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})


def _run(preloaded, spec: ResolvedSpec, host_fd: int, log_fd: int) -> int:
    from pytest_microsandbox.vmm import process

    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    return process.run(socket.socket(fileno=host_fd), spec, preloaded)


class Spare:
    """A VMM forked before its request, waiting for it: a request then costs no fork (about 3 ms of copying the
    zygote's page tables), only what depends on the sandbox. Forked after each reply, so it inherits what the
    zygote has computed so far (kernel digests)."""

    def __init__(self, control: socket.socket, preloaded) -> None:
        self.sock, theirs = socket_pair()

        def wait_for_request() -> tuple[ResolvedSpec, int, int]:
            try:
                message, fds = receive_message(theirs, max_fds=2)
            except (EOFError, OSError, ValueError):
                os._exit(0)  # discarded, or its zygote is gone: quietly, this is no sandbox's error
            theirs.close()
            return decode(message.get("spec"), ResolvedSpec), fds[0], fds[1]

        try:
            self.pid, self.pidfd, self.start_ticks = _fork_vmm(control, preloaded, wait_for_request,
                                                               close_in_child=(self.sock,))
        except BaseException:
            self.sock.close()
            raise
        finally:
            theirs.close()

    def hand(self, spec: ResolvedSpec, fds: list[int]) -> bool:
        """Give it its sandbox; False when it is gone (then the request forks a VMM of its own)."""
        try:
            send_message(self.sock, {"spec": encode(spec)}, fds)
            return True
        except OSError:
            self.discard()
            return False
        finally:
            self.sock.close()

    def discard(self) -> None:
        self.sock.close()  # it reads EOF and exits
        os.close(self.pidfd)


def spawn(control: socket.socket, request: dict, fds: list[int], preloaded,
          spare: Spare | None) -> tuple[dict, list[int]]:
    """The VMM for ``request``'s spec (the spare, else a new fork); the reply and the descriptors to send with it."""
    if "malformed" in request:
        return {"error": request["malformed"]}, []
    if len(fds) != 2:
        return {"error": f"a spawn request carries 2 descriptors, not {len(fds)}"}, []
    spec = preloaded.resolve(decode(request.get("spec")))
    if spare is not None and spare.hand(spec, fds):
        return {"pid": spare.pid, "start_ticks": spare.start_ticks}, [spare.pidfd]
    pid, pidfd, start_ticks = _fork_vmm(control, preloaded, lambda: (spec, fds[0], fds[1]))
    return {"pid": pid, "start_ticks": start_ticks}, [pidfd]


def serve(control: socket.socket) -> int:
    from pytest_microsandbox.vmm.process import Preloaded

    preloaded = Preloaded.load()
    gc.freeze()  # what is loaded now stays shared with the VMMs: no collection touches (and copies) its pages
    signal.signal(signal.SIGCHLD, _reap)
    spare: Spare | None = None
    while True:
        try:
            request, fds = receive_message(control, max_fds=2)
        except (EOFError, ConnectionError):
            return 0
        except ValueError as e:  # the owner's bug, not a reason to end every sandbox it has
            request, fds = {"malformed": str(e)}, []
        try:
            reply, reply_fds = spawn(control, request, fds, preloaded, spare)
        except Exception as e:  # the request's fault (a bad spec) or the host's (fork): the owner reports it
            reply, reply_fds = {"error": f"{type(e).__name__}: {e}"}, []
        finally:
            for fd in fds:
                os.close(fd)
            if spare is not None and spare.sock.fileno() < 0:  # handed its sandbox, or gone
                spare = None
        try:
            send_message(control, reply, reply_fds)
        except OSError:
            return 0
        finally:
            for fd in reply_fds:
                os.close(fd)
        # The VMM just handed its sandbox sets itself up now: the next spare (a fork: the zygote's page tables copied)
        # waits until it is done, unless another request comes first, so the two do not share the CPUs.
        select.select([control], [], [], SPARE_DELAY)
        preloaded.refresh()  # off the requester's path, as the spare
        if spare is None:
            try:
                spare = Spare(control, preloaded)
            except OSError:
                spare = None  # no fork now (memory, pids): the next request forks its own


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--fd":
        print("usage: python -m pytest_microsandbox.vmm.zygote --fd N", file=sys.stderr)
        sys.exit(2)
    sys.exit(serve(socket.socket(fileno=int(sys.argv[2]))))
