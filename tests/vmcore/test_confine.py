"""The VMM's confinement: what a confined process can no longer do, and that what a VMM does still works."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import ctypes, errno, os, socket, subprocess, sys, threading
sys.path.insert(0, sys.argv[1])
from _vmcore.confine import confine
confine()
libc = ctypes.CDLL(None, use_errno=True)
def attempt(fn):
    try:
        fn()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def libc_call(name, *args):
    if getattr(libc, name)(*args) != 0:
        raise OSError(ctypes.get_errno(), name)
results = {
    "exec": attempt(lambda: subprocess.run(["true"])),
    "inet": attempt(lambda: socket.socket(socket.AF_INET)),
    "unshare": attempt(lambda: libc_call("unshare", 0x00020000)),
    "mount": attempt(lambda: libc_call("mount", b"none", b"/tmp", b"tmpfs", 0, None)),
    "ptrace": attempt(lambda: libc_call("ptrace", 16, os.getppid(), None, None)),
    "unix": attempt(lambda: socket.socketpair()),
    "files": attempt(lambda: open(sys.argv[2], "w").write("still writes")),
}
box = []
thread = threading.Thread(target=box.append, args=("ran",))
thread.start()
thread.join()
results["thread"] = box[0] if box else "no"
status = dict(line.split(":\t", 1) for line in open("/proc/self/status").read().splitlines() if ":\t" in line)
results["capabilities"] = hex(int(status["CapPrm"], 16) & ~0x10000DF)  # any held beyond the kept ones
print(results, status["NoNewPrivs"].strip(), status["Seccomp"].strip())
"""


def test_a_confined_process_cannot_exec_mount_trace_or_reach_the_network(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT), str(tmp_path / "f")], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    results, no_new_privs, seccomp = out.rsplit(" ", 2)
    assert eval(results) == {  # noqa: S307 - our own probe's repr
        "exec": "EPERM", "inet": "EAFNOSUPPORT", "unshare": "EPERM", "mount": "EPERM", "ptrace": "EPERM",
        "unix": "ok", "files": "ok", "thread": "ran", "capabilities": "0x0"}
    assert (no_new_privs, seccomp.strip()) == ("1", "2")
    assert (tmp_path / "f").read_text() == "still writes"
