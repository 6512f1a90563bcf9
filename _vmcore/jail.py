"""A VMM process's own mount namespace holding only what it serves, as Firecracker's jailer builds a chroot: a
small tmpfs becomes the root, and each path the VMM uses (its kernel, disks, shared directories, template cache,
console log, ``/dev/kvm``, ``/proc``) is bind-mounted into it at the same absolute path; the host's root is
detached. A VMM taken over by its guest then sees nothing else of the host (no home directories, no other
sandboxes' files), and what it was given read-only stays read-only even to its own writes.

Every path must be given resolved (``os.path.realpath``): the new root has directories where the host may have
symlinks. Entered as root with ``unshare(CLONE_NEWNS)``; otherwise inside a new user namespace that maps only the
caller's own ids (so nothing is gained: files are reached with exactly the caller's rights). Either way before the
seccomp filter (``confine``), which denies both afterwards.

Must run single-threaded (a user namespace demands it): in the forked VMM process, before any machine exists.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass

CLONE_NEWNS, CLONE_NEWUSER = 0x00020000, 0x10000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
MNT_DETACH = 0x2
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
SYS_PIVOT_ROOT, SYS_MOUNT_SETATTR = 155, 442  # x86_64


class JailRefused(OSError):
    """The host refuses a new mount namespace here (no CAP_SYS_ADMIN, no user namespaces): nothing was changed."""


@dataclass(frozen=True)
class Exposed:
    """A host path the VMM keeps, ``writable`` or read-only. A directory comes with the mounts beneath it (a shared
    directory's, which its guest sees), and read-only holds for all of them."""

    path: str
    writable: bool = False


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str, path: str = "") -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path or None)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(source and source.encode(), target.encode(), fstype and fstype.encode(), ctypes.c_ulong(flags),
                       data and data.encode()), "mount", target)


def _read_only(target: str, recursive: bool) -> None:
    """Read-only (and nosuid, nodev) for the mount at ``target`` and, with ``recursive``, every mount beneath it."""
    attr = _MountAttr(MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
    flags = AT_RECURSIVE if recursive else 0
    result = _libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, target.encode(), flags, ctypes.byref(attr),
                           ctypes.sizeof(attr))
    if result != 0 and ctypes.get_errno() == errno.ENOSYS and not recursive:  # before Linux 5.12
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        return
    _check(result, "mount_setattr", target)


def _enter_namespace() -> str:
    """A new mount namespace: directly with CAP_SYS_ADMIN, otherwise owned by a new user namespace mapping only our
    own uid and gid. Returns which."""
    if _libc.unshare(CLONE_NEWNS) == 0:
        return "mount namespace"
    err = ctypes.get_errno()
    if err != errno.EPERM:
        raise JailRefused(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
    uid, gid = os.geteuid(), os.getegid()
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise JailRefused(err, f"no mount namespace for this user: {os.strerror(err)}")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    return "user and mount namespace"


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


def _open_mount_point(root: str, path: str, directory: bool) -> int:
    """An ``O_PATH`` descriptor of ``root + path``, its missing parts created (directories, and a file last for a
    file) in the new root's tmpfs. Walked one component at a time without following symlinks: a part already there
    lies in an exposed directory (a mirror of the host) and is never created there, nor followed out of it."""
    tmpfs = os.stat(root).st_dev
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = _parts(path)
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            try:
                step = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if os.fstat(fd).st_dev != tmpfs:
                    raise OSError(errno.ENOENT, "a path the VMM needs vanished while its jail was built",
                                  path) from None
                if directory or not last:
                    os.mkdir(part, 0o755, dir_fd=fd)
                else:
                    os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                                     dir_fd=fd))
                step = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = step
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode) or (not last and not stat.S_ISDIR(mode)):
                raise OSError(errno.ELOOP, "a symlink where the VMM's jail needs a real path", root + path)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_source(path: str) -> int:
    """An ``O_PATH`` descriptor of host path ``path`` (resolved, as given): one that was swapped for a symlink since
    it was resolved leads elsewhere, and is refused rather than bound."""
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    if stat.S_ISLNK(os.fstat(fd).st_mode) or os.readlink(f"/proc/self/fd/{fd}") != path:
        os.close(fd)
        raise OSError(errno.ELOOP, "a path the VMM needs changed while its jail was built", path)
    return fd


def _bind(source: str, new_root: str, directory: bool) -> str:
    """Bind host ``source`` at ``new_root + source`` (a directory with what is mounted beneath it), through
    descriptors of both: neither end is a path that can be swapped meanwhile. Returns the target's path."""
    src = _open_source(source)
    try:
        dst = _open_mount_point(new_root, source, directory)
        try:
            _mount(f"/proc/self/fd/{src}", f"/proc/self/fd/{dst}", None, MS_BIND | (MS_REC if directory else 0))
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return new_root + source if source != "/" else new_root


# What the host kernel answers about itself and its processes: a shared '/' (the host image) brings the host's
# /proc along, whose /proc/PID/root leads into every other process's files. The jail keeps none of them.
KERNEL_FILESYSTEMS = {"proc", "sysfs", "debugfs", "tracefs", "securityfs", "cgroup", "cgroup2", "bpf", "pstore",
                      "efivarfs", "configfs", "binfmt_misc", "fusectl"}


def _unescape(field: str) -> str:
    """A mountinfo path field: spaces, tabs, newlines and backslashes are written as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def kernel_filesystem_mounts() -> list[str]:
    """Where this mount namespace has the host kernel's own file systems mounted (``/proc/self/mountinfo``)."""
    with open("/proc/self/mountinfo", "rb") as f:
        rows = [line.decode(errors="surrogateescape").split(" - ", 1) for line in f]
    return [_unescape(left.split()[4]) for left, right in rows if right.split()[0] in KERNEL_FILESYSTEMS]


def _detach_kernel_filesystems(new_root: str, points: Sequence[str], exposed: Sequence[Exposed]) -> None:
    """Detach the copies of ``points`` that the exposed directories brought into the new root."""
    dirs = [e.path for e in exposed]
    inside = [new_root + m for m in points if any(_beneath(m, d) and m != d for d in dirs)]
    for point in sorted(inside, key=lambda m: -len(_parts(m))):  # the deepest first
        if _libc.umount2(point.encode(), MNT_DETACH) != 0 and ctypes.get_errno() not in (errno.EINVAL, errno.ENOENT):
            _check(-1, "umount2", point)


def _beneath(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def enter_jail(new_root: str, exposed: Sequence[Exposed], kernel_mounts: Sequence[str] | None = None) -> str:
    """Make ``new_root`` (an empty directory of ours; a tmpfs is mounted on it, in the new namespace only) this
    process's root, holding only ``exposed``; returns what was done, in a line. Raises JailRefused when the host
    refuses a namespace (the caller decides whether to run without one: nothing changed); any other OSError (a
    path that does not exist) leaves this process in a half-built namespace, which must not go on.
    ``kernel_mounts``: ``kernel_filesystem_mounts()`` as read beforehand (a process forking many VMMs reads it once
    per VMM, off their way); read here when not given."""
    writable: dict[str, bool] = {}
    for item in exposed:  # a path given twice (a directory shared read-only and writable) is bound once, as asked
        writable[item.path] = writable.get(item.path, False) or item.writable
    exposed = [Exposed(path, w) for path, w in writable.items()]
    how = _enter_namespace()
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount from here on reaches the host
    _mount("vmm-root", new_root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=1m,nr_inodes=4096,mode=0755")
    done: list[str] = []
    for item in sorted(exposed, key=lambda e: len(_parts(e.path))):  # parents before what lies beneath them
        if not os.path.isabs(item.path):
            raise OSError(errno.EINVAL, "a jail path must be absolute", item.path)
        if not os.path.lexists(item.path):
            raise OSError(errno.ENOENT, "the VMM needs this path and it does not exist", item.path)
        is_dir = os.path.isdir(item.path)
        target = _bind(item.path, new_root, is_dir)
        if not item.writable:
            _read_only(target, is_dir)
        done.append(item.path)
    _detach_kernel_filesystems(new_root, kernel_filesystem_mounts() if kernel_mounts is None else kernel_mounts,
                               exposed)
    # A directory holding the new root would show it (and what is bound in it) again inside: take that copy away.
    copy = new_root + new_root
    for item in exposed:
        if _beneath(new_root, item.path) and os.path.ismount(copy):
            _check(_libc.umount2(copy.encode(), MNT_DETACH), "umount2", copy)
    os.chdir(new_root)
    _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")  # the old root now lies on top of the new
    _check(_libc.umount2(b".", MNT_DETACH), "umount2", "the host's root")
    os.chdir("/")
    _read_only("/", False)  # the skeleton of mount points itself
    return f"jailed: own {how}, root holds {len(done)} paths"
