"""``FuseMount``: our FUSE server mounted on a host directory through ``/dev/fuse``, served by a thread.

Also what ``msb volume mount NAME DIR`` uses to give users a quota-enforced, optionally read-only view of a volume.
"""

from __future__ import annotations

import atexit
import errno
import os
import threading
from types import TracebackType

from _vmcore.fs import devfuse
from _vmcore.fs.server import FuseServer


class FuseUnavailableError(OSError):
    """This host cannot mount FUSE file systems here (no /dev/fuse, or mount(2) not permitted)."""


class FuseMount:
    """Serve ``root`` at ``mountpoint``; use as a context manager (always unmounts, even on error).

    ``readonly`` and ``quota_mib`` are enforced by the server itself (EROFS, ENOSPC); ``readonly`` also mounts
    with ``MS_RDONLY``, so the kernel says so before asking (``access(W_OK)``, ``statvfs`` flags, ``findmnt``).
    Only the mounting user may enter the mount unless ``allow_other``: FUSE then lets every user of the host in
    (limited only by the files' modes), which would undo a home kept ``0700``.
    ``cache_timeout`` is how long the kernel may cache names and attributes (seconds); ``threads`` serve requests
    side by side (the server is thread-safe: table updates run under the GIL, data transfers without it).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        mountpoint: str | os.PathLike[str],
        *,
        readonly: bool = False,
        allow_other: bool = False,
        quota_mib: int | None = None,
        cache_timeout: float = 1.0,
        threads: int = 1,
    ) -> None:
        if not 1 <= threads <= 64:
            raise ValueError("threads must be between 1 and 64")
        self.root = os.fspath(root)
        self.mountpoint = os.fspath(mountpoint)
        self.server = FuseServer(self.root, readonly=readonly, quota_mib=quota_mib, cache_timeout=cache_timeout)
        self.readonly = readonly
        self.allow_other = allow_other
        self._devfd = -1
        self._stop_r = self._stop_w = -1
        self._threads: list[threading.Thread] = []
        self._thread_count = threads
        self._mounted = False
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    def __enter__(self) -> FuseMount:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Mount and start serving; the first access through the mount completes the INIT handshake."""
        try:
            self._devfd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        except OSError as err:
            self.server.close()
            raise FuseUnavailableError(err.errno, f"cannot open /dev/fuse: {err.strerror}") from err
        try:
            devfuse.mount(self._devfd, self.mountpoint, allow_other=self.allow_other, kernel_readonly=self.readonly)
        except OSError as err:
            os.close(self._devfd)
            self._devfd = -1
            self.server.close()
            if err.errno in (errno.EPERM, errno.EACCES, errno.ENODEV):
                raise FuseUnavailableError(err.errno, f"cannot mount FUSE: {err.strerror}") from err
            raise
        self._mounted = True
        atexit.register(self.close)  # never leave a dead mount behind when the interpreter exits
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        for i in range(self._thread_count):  # each reads whole requests from the same connection
            thread = threading.Thread(target=self._serve, name=f"fuse{i}:{self.mountpoint}", daemon=True)
            thread.start()
            self._threads.append(thread)
        try:
            os.stat(self.mountpoint)  # proves the handshake worked (served by the thread above)
        except BaseException:
            self.close()
            raise

    def _serve(self) -> None:
        try:
            devfuse.serve(self.server, self._devfd, self._stop_r)
        except BaseException as err:  # noqa: BLE001 - kept for the owner; the connection is aborted below
            self.error = err
            self._abort()

    def abort(self) -> None:
        """Cut the connection now (a watchdog's tool): every pending and later request fails with ENOTCONN."""
        self._abort()

    def _abort(self) -> None:
        """Close our end of the connection: the kernel then fails every pending and later request (no hang)."""
        with self._lock:
            if self._devfd >= 0:
                os.close(self._devfd)
                self._devfd = -1

    def close(self) -> None:
        """Unmount (lazily if busy), stop the serving thread, release every descriptor. Idempotent; the cleanup
        runs to the end even when the unmount fails, and that failure is raised afterwards."""
        failure: OSError | None = None
        if self._mounted:
            self._mounted = False
            atexit.unregister(self.close)
            try:
                devfuse.unmount(self.mountpoint)
            except OSError as err:
                if err.errno not in (errno.EINVAL, errno.ENOENT):  # EINVAL: no longer mounted
                    try:
                        devfuse.unmount(self.mountpoint, lazy=True)
                    except OSError as lazy_err:
                        failure = lazy_err
        if self._threads:
            os.write(self._stop_w, b"x")  # never read: every serving thread sees it
            for thread in self._threads:
                thread.join(timeout=10)
            self._threads = []
        self._abort()
        for fd in (self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._stop_r = self._stop_w = -1
        self.server.close()
        if failure is not None:
            raise failure
