"""What a FUSE server needs of its process, got before it may be lost: a descriptor of ``/proc/self/fd`` (files are
reopened through their magic links) and a descriptor limit raised as far as it goes (every inode the guest holds is an
open descriptor), with the one warning on stderr when it runs out anyway. Python, not Cython: none of it is on a
request's path."""

from __future__ import annotations

import os
import resource
import sys

_held_proc_fd = (-1, -1)  # (pid, descriptor of /proc/self/fd) held by ``hold_proc_access``


def hold_proc_access() -> None:
    """Open now what servers made later need of ``/proc`` (``/proc/self/fd``, the descriptor limit), for a process
    about to lose ``/proc`` (the VMM's jail holds none: another process's ``/proc/PID/root`` would be a way out)."""
    global _held_proc_fd
    raise_fd_limit()
    _held_proc_fd = (os.getpid(), os.open("/proc/self/fd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))


def proc_self_fd() -> int:
    pid, fd = _held_proc_fd
    if pid == os.getpid():  # "self" is resolved when opened: a forked child's inherited one is its parent's
        return os.dup(fd)
    return os.open("/proc/self/fd", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def raise_fd_limit() -> None:
    """Every inode the guest holds is an open descriptor: lift RLIMIT_NOFILE as far as this process may, to the
    kernel's ceiling (``fs.nr_open``) where it may raise the hard limit (CAP_SYS_RESOURCE), else to the hard limit.
    Past it, lookups and creates answer EMFILE and the server says so once on stderr (the sandbox's console log)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return
    try:
        with open("/proc/sys/fs/nr_open", "rb") as f:
            ceiling = int(f.read(32))
    except (OSError, ValueError):
        ceiling = 0
    attempts = [(ceiling, ceiling)] if hard != resource.RLIM_INFINITY and ceiling > hard else []
    attempts.append((ceiling if hard == resource.RLIM_INFINITY else hard, hard))
    for limits in attempts:
        if limits[0] <= soft:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            return
        except (OSError, ValueError):
            continue


def warn_fd_limit(inodes: int, handles: int) -> None:
    try:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        sys.stderr.write(f"msb-fs: out of file descriptors (limit {soft}) with {inodes} inodes and {handles} open "
                         "files served: the guest gets EMFILE; raise the hard limit (ulimit -Hn, LimitNOFILE=) to "
                         "serve more\n")
        sys.stderr.flush()
    except Exception:
        pass  # a warning must never fail a request
