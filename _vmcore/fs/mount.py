"""Our FUSE server on a ``/dev/fuse`` connection, served by threads of this process.

``FuseConnection`` serves a connection that someone else mounts (a sandbox launcher, inside the sandbox's private
mount namespace: the mount then goes away with the namespace). ``FuseMount`` mounts one itself on a host directory:
what ``msb volume mount NAME DIR`` uses to give users a quota-enforced, optionally read-only view of a volume.
"""

from __future__ import annotations

import atexit
import errno
import os
import select
import threading
from types import TracebackType

from _vmcore.fs import devfuse
from _vmcore.fs.server import FuseServer


class FuseUnavailableError(OSError):
    """This host cannot mount FUSE file systems here (no /dev/fuse, or mount(2) not permitted)."""


class FuseConnection:
    """A ``/dev/fuse`` descriptor and the server answering it.

    ``readonly`` and ``quota_mib`` are enforced by the server itself (EROFS, ENOSPC). ``cache_timeout`` is how long
    the kernel may cache names and attributes (seconds); ``threads`` serve requests side by side (the server is
    thread-safe: table updates run under the GIL, data transfers without it).

    The kernel refuses reads on a descriptor no mount uses yet, so serving starts only once the mount exists:
    ``serve()`` right away when this process mounted it, ``serve(after=fd)`` when another process will and
    writes a byte to ``fd`` once it has (end of file instead: it never mounted, and nothing is served).
    Serving ends when the mount goes away (unmounted, or its namespace ended) or at ``close()``.
    """

    def __init__(self, root: str | os.PathLike[str], *, readonly: bool = False, quota_mib: int | None = None,
                 cache_timeout: float = 1.0, threads: int = 1) -> None:
        if not 1 <= threads <= 64:
            raise ValueError("threads must be between 1 and 64")
        self.root = os.fspath(root)
        self.readonly = readonly
        self.server = FuseServer(self.root, readonly=readonly, quota_mib=quota_mib, cache_timeout=cache_timeout)
        try:
            self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        except OSError as err:
            self.server.close()
            raise FuseUnavailableError(err.errno, f"cannot open /dev/fuse: {err.strerror}") from err
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC)
        self._thread_count = threads
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.error: BaseException | None = None

    def serve(self, after: int | None = None) -> None:
        """Start the serving threads (see the class); ``after`` is owned from here on and closed when read."""
        first = threading.Thread(target=self._first, args=(after,), name=f"fuse0:{self.root}", daemon=True)
        self._threads.append(first)
        first.start()

    def _first(self, after: int | None) -> None:
        if after is not None:
            try:
                ready, _, _ = select.select([after, self._stop_r], [], [])
                if self._stop_r in ready or not os.read(after, 1):
                    return
            finally:
                os.close(after)
        with self._lock:
            if self.fd < 0:
                return
            for i in range(1, self._thread_count):  # each reads whole requests from the same connection
                thread = threading.Thread(target=self._serve, name=f"fuse{i}:{self.root}", daemon=True)
                self._threads.append(thread)
                thread.start()
        self._serve()

    def _serve(self) -> None:
        try:
            devfuse.serve(self.server, self.fd, self._stop_r)
        except BaseException as err:  # noqa: BLE001 - kept for the owner; the connection is aborted below
            self.error = err
            self.abort()

    def abort(self) -> None:
        """Close our end of the connection: the kernel then fails every pending and later request with ENOTCONN
        (no hang). A watchdog's tool too."""
        with self._lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

    def close(self) -> None:
        """Stop the serving threads, release every descriptor and the server. Idempotent."""
        if self._stop_w >= 0:
            os.write(self._stop_w, b"x")  # never read: every serving thread sees it
            for thread in list(self._threads):
                thread.join(timeout=10)
            self._threads = []
        self.abort()
        for fd in (self._stop_r, self._stop_w):
            if fd >= 0:
                os.close(fd)
        self._stop_r = self._stop_w = -1
        self.server.close()


class FuseMount:
    """Serve ``root`` at ``mountpoint``; use as a context manager (always unmounts, even on error).

    ``readonly`` also mounts with ``MS_RDONLY``, so the kernel says so before asking (``access(W_OK)``, ``statvfs``
    flags, ``findmnt``). Only the mounting user may enter the mount unless ``allow_other``: FUSE then lets every
    user of the host in (limited only by the files' modes), which would undo a home kept ``0700``. The other
    settings are ``FuseConnection``'s.
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
        self.readonly = readonly
        self.allow_other = allow_other
        self._settings = {"readonly": readonly, "quota_mib": quota_mib, "cache_timeout": cache_timeout,
                          "threads": threads}
        self._connection: FuseConnection | None = None
        self._mounted = False

    @property
    def server(self) -> FuseServer:
        if self._connection is None:
            raise RuntimeError("this mount is not started")
        return self._connection.server

    @property
    def error(self) -> BaseException | None:
        return self._connection.error if self._connection is not None else None

    def __enter__(self) -> FuseMount:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Mount and start serving; the first access through the mount completes the INIT handshake."""
        connection = self._connection = FuseConnection(self.root, **self._settings)
        try:
            devfuse.mount(connection.fd, self.mountpoint, allow_other=self.allow_other,
                          kernel_readonly=self.readonly)
        except OSError as err:
            connection.close()
            self._connection = None
            if err.errno in (errno.EPERM, errno.EACCES, errno.ENODEV):
                raise FuseUnavailableError(err.errno, f"cannot mount FUSE: {err.strerror}") from err
            raise
        self._mounted = True
        atexit.register(self.close)  # never leave a dead mount behind when the interpreter exits
        connection.serve()
        try:
            os.stat(self.mountpoint)  # proves the handshake worked (served by the thread above)
        except BaseException:
            self.close()
            raise

    def abort(self) -> None:
        """Cut the connection now (a watchdog's tool): every pending and later request fails with ENOTCONN."""
        if self._connection is not None:
            self._connection.abort()

    def close(self) -> None:
        """Unmount (lazily if busy), stop the serving threads, release every descriptor. Idempotent; the cleanup
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
        if self._connection is not None:
            self._connection.close()
        if failure is not None:
            raise failure
