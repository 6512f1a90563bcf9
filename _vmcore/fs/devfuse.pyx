# cython: language_level=3
"""The ``/dev/fuse`` transport: mount(2) a FUSE connection and pump requests between it and a ``FuseServer``.

Requests are read whole (one ``read`` is one request), served by ``FuseServer.handle_raw`` straight out of the read
buffer and into the reply buffer, and written back with one ``write``. The loop waits without the GIL.
"""

from libc.errno cimport errno, EINTR, EAGAIN, ENOENT, ENODEV
from libc.stdlib cimport malloc, free
from libc.stdint cimport uint8_t

from _vmcore.fs.server cimport FuseServer

import os

cdef extern from "<sys/mount.h>" nogil:
    int c_mount "mount"(const char *source, const char *target, const char *fstype, unsigned long flags,
                        const void *data)
    int umount2(const char *target, int flags)
    enum: MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_RDONLY, MNT_DETACH

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    enum: POLLIN, POLLERR, POLLHUP

cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void *buf, size_t n)
    ssize_t write(int fd, const void *buf, size_t n)


def mount(int devfd, mountpoint, *, bint allow_other=True, bint nosuid=True, bint nodev=True,
          bint noexec=False, bint kernel_readonly=False) -> None:
    """Mount the FUSE connection open on ``devfd`` at ``mountpoint`` (needs CAP_SYS_ADMIN)."""
    target = os.fsencode(mountpoint)
    mode = os.stat(mountpoint).st_mode & 0o170000
    opts = f"fd={devfd},rootmode={mode:o},user_id={os.getuid()},group_id={os.getgid()},default_permissions"
    if allow_other:
        opts += ",allow_other"
    cdef unsigned long flags = (MS_NOSUID if nosuid else 0) | (MS_NODEV if nodev else 0) | \
        (MS_NOEXEC if noexec else 0) | (MS_RDONLY if kernel_readonly else 0)
    data = opts.encode()
    if c_mount(b"msb-fs", target, b"fuse.msb", flags, <const char *>data) != 0:
        err = errno
        raise OSError(err, os.strerror(err), os.fsdecode(target))


def unmount(mountpoint, *, bint lazy=False) -> None:
    """Unmount ``mountpoint``; ``lazy`` detaches it even while busy."""
    target = os.fsencode(mountpoint)
    if umount2(target, MNT_DETACH if lazy else 0) != 0:
        err = errno
        raise OSError(err, os.strerror(err), os.fsdecode(target))


def serve(FuseServer server, int devfd, int stopfd) -> None:
    """Serve requests from ``devfd`` until ``stopfd`` becomes readable or the connection goes away (unmount)."""
    cdef size_t incap = server.max_write + 8192        # the kernel insists on room for a whole WRITE
    cdef size_t outcap = server.max_write + 8192
    cdef uint8_t *inbuf = <uint8_t *>malloc(incap)
    cdef uint8_t *outbuf = <uint8_t *>malloc(outcap)
    cdef pollfd fds[2]
    cdef ssize_t n, r
    cdef int rc, err
    if inbuf == NULL or outbuf == NULL:
        free(inbuf)
        free(outbuf)
        raise MemoryError()
    try:
        while True:
            fds[0].fd = devfd
            fds[0].events = POLLIN
            fds[0].revents = 0
            fds[1].fd = stopfd
            fds[1].events = POLLIN
            fds[1].revents = 0
            with nogil:
                rc = poll(fds, 2, -1)
            if rc < 0:
                if errno == EINTR:
                    continue
                err = errno
                raise OSError(err, os.strerror(err))
            if fds[1].revents:
                return
            with nogil:
                n = read(devfd, inbuf, incap)
            if n < 0:
                err = errno
                if err == EINTR or err == EAGAIN or err == ENOENT:   # ENOENT: the request was interrupted
                    continue
                if err == ENODEV:                                    # unmounted / aborted
                    return
                raise OSError(err, os.strerror(err))
            r = server.handle_raw(inbuf, n, outbuf, outcap)
            if r > 0:
                with nogil:
                    n = write(devfd, outbuf, r)
                if n < 0 and errno == ENODEV:
                    return                    # ENOENT (the kernel gave up on that request) is not an error
    finally:
        free(inbuf)
        free(outbuf)
