"""Confine a VMM process before it serves a guest, as Firecracker's jailer does with what we can do in-process:
``no_new_privs`` (nothing it runs can gain privileges) and a seccomp filter (libseccomp, through ``pyseccomp``)
that refuses what a VMM never needs and an attacker who took it over would want first.

The filter denies rather than allows: a VMM in Python makes hundreds of distinct syscalls (the interpreter's
allocator and imports, the FUSE server's whole file API), and an allowlist that misses one breaks a guest
mid-run. Denied with ``EPERM``: running programs, debugging or writing other processes, mounts and namespaces,
kernel modules, kexec, BPF, perf, keyrings, clocks, swap, reboot; sockets other than ``AF_UNIX`` (no network);
``clone3`` answers ``ENOSYS`` so threads are made with ``clone``, whose namespace flags can be checked.
Applied to every thread of the process (``TSYNC``), for the rest of its life.
"""

from __future__ import annotations

import errno
import socket

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


def confine() -> str:
    """Confine this process; returns what was done, in a line. Raises OSError where the host cannot (no
    libseccomp): the caller decides whether to run unconfined."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as e:  # the binding, or libseccomp.so.2 it loads
        raise OSError(errno.ENOSYS, f"seccomp is not available here: {e}") from None
    deny = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    rules.set_attr(seccomp.Attr.CTL_NNP, 1)
    rules.set_attr(seccomp.Attr.CTL_TSYNC, 1)
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
    rules.load()
    return f"confined: no_new_privs, seccomp denies {denied} syscalls, non-unix sockets and new namespaces"
