"""Confine a VMM process before it serves a guest, as Firecracker's jailer does with what we can do in-process:
``no_new_privs`` (nothing it runs can gain privileges), only the capabilities its FUSE servers use (when it runs
as root), and a seccomp filter (libseccomp, through ``pyseccomp``) that refuses what a VMM never needs and an
attacker who took it over would want first. Its own mount namespace holding only what it serves comes first
(``_vmcore.jail``): the filter denies mounts and namespaces from then on.

The filter denies rather than allows: a VMM in Python makes hundreds of distinct syscalls (the interpreter's
allocator and imports, the FUSE server's whole file API), and an allowlist that misses one breaks a guest
mid-run. Denied with ``EPERM``: running programs, debugging or writing other processes, mounts and namespaces,
kernel modules, kexec, BPF, perf, keyrings, clocks, swap, reboot; sockets other than ``AF_UNIX`` (no network);
``clone3`` answers ``ENOSYS`` so threads are made with ``clone``, whose namespace flags can be checked.
Applied to every thread of the process (``TSYNC``), for the rest of its life.
"""

from __future__ import annotations

import ctypes
import errno
import socket
import tempfile
from dataclasses import dataclass

DENIED = (
    "execve", "execveat", "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig",
    "fspick", "mount_setattr", "unshare", "setns", "init_module", "finit_module", "delete_module",
    "kexec_load", "kexec_file_load", "bpf", "perf_event_open", "keyctl", "add_key", "request_key",
    "reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex",
    "quotactl", "lookup_dcookie", "userfaultfd", "personality", "syslog", "iopl", "ioperm",
    "open_by_handle_at", "name_to_handle_at", "vhangup", "uselib",
)
CLONE_NAMESPACES = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
                    0x00000080)  # NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME


# What a VMM running as root still needs: its FUSE servers act as the guest's user (setfsuid/setfsgid, then the
# file-permission capabilities for the checks the kernel makes on their behalf) and raise their descriptor limit.
KEPT_CAPABILITIES = {
    0: "CHOWN", 1: "DAC_OVERRIDE", 2: "DAC_READ_SEARCH", 3: "FOWNER", 4: "FSETID", 6: "SETGID", 7: "SETUID",
    24: "SYS_RESOURCE",
}
_CAP_VERSION_3 = 0x20080522
_PR_CAPBSET_DROP, _PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 24, 47, 4


def _last_capability() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read(8))
    except (OSError, ValueError):
        return 63


_LAST_CAP = _last_capability()  # the bounding set has no more than this kernel knows


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_capabilities() -> int:
    """Keep only ``KEPT_CAPABILITIES`` (permitted, effective; none inheritable, ambient or in the bounding set
    beyond them); returns how many the process held before. A process without capabilities is left as it is."""
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    permitted = data[0].permitted | data[1].permitted << 32
    if not permitted:
        return 0
    keep = sum(1 << bit for bit in KEPT_CAPABILITIES)
    for bit in range(_LAST_CAP + 1):  # the bounding set first: it needs CAP_SETPCAP, about to go
        if not keep >> bit & 1:
            libc.prctl(_PR_CAPBSET_DROP, bit, 0, 0, 0)  # EINVAL past the kernel's last capability: fine
    libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    effective = data[0].effective | data[1].effective << 32
    for i in (0, 1):
        data[i].permitted = (permitted & keep) >> (32 * i) & 0xFFFFFFFF
        data[i].effective = (effective & keep) >> (32 * i) & 0xFFFFFFFF
        data[i].inheritable = 0
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")
    return bin(permitted).count("1")


@dataclass(frozen=True)
class SeccompFilter:
    program: bytes  # the BPF program libseccomp generated for the rules
    denied: int  # how many syscalls it denies outright

    def load(self) -> None:
        """Install it for every thread of this process (``no_new_privs`` first, which it requires)."""
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        buffer = ctypes.create_string_buffer(self.program, len(self.program))
        program = _SockFprog(len(self.program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
        if libc.syscall(_SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(program)):
            raise OSError(ctypes.get_errno(), "seccomp(SECCOMP_SET_MODE_FILTER)")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_PR_SET_DUMPABLE, _PR_SET_NO_NEW_PRIVS = 4, 38
_SYS_SECCOMP, _SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC = 317, 1, 1  # x86_64


def seccomp_filter() -> SeccompFilter:
    """The filter ``confine`` loads, generated by libseccomp (about 2 ms) once per process that forks VMMs: each
    VMM then installs the program as it is. Raises OSError where the host cannot (no libseccomp)."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as e:  # the binding, or libseccomp.so.2 it loads
        raise OSError(errno.ENOSYS, f"seccomp is not available here: {e}") from None
    deny = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    denied = 0
    for name in DENIED:
        try:
            rules.add_rule(deny, name)
            denied += 1
        except (ValueError, OSError):
            pass  # a syscall this architecture or libseccomp does not know: nothing to deny
    rules.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.NE, socket.AF_UNIX))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    for flag in CLONE_NAMESPACES:
        rules.add_rule(deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
    with tempfile.TemporaryFile() as f:
        rules.export_bpf(f)
        f.seek(0)
        program = f.read()
    return SeccompFilter(program, denied)


def confine_without_seccomp(reason: str) -> str:
    """What confinement is left where libseccomp is missing: ``no_new_privs``, capabilities, not dumpable."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 or libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl")
    held = drop_capabilities()
    kept = f", capabilities {held} -> {len(KEPT_CAPABILITIES)}" if held else ""
    return f"confined without seccomp ({reason}): no_new_privs{kept}"


def confine(seccomp: SeccompFilter | None = None) -> str:
    """Confine this process with ``seccomp`` (``seccomp_filter()``, built now when not given); returns what was
    done, in a line. Raises OSError where the host cannot (no libseccomp): the caller decides whether to run
    unconfined."""
    if seccomp is None:
        seccomp = seccomp_filter()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:  # no other process of its user may ptrace it or read its memory
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")
    held = drop_capabilities()
    seccomp.load()
    kept = f", capabilities {held} -> {len(KEPT_CAPABILITIES)}" if held else ""
    return (f"confined: no_new_privs, seccomp denies {seccomp.denied} syscalls, non-unix sockets and new "
            f"namespaces{kept}")
