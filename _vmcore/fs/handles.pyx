# cython: language_level=3
"""The open-handle table of the FUSE server: what OPEN, OPENDIR and CREATE hand the guest (an ``fh`` naming a real
descriptor), how a request finds the file its ``fh`` names (``file_handle``; with no-open, a descriptor for that
request only), and RELEASE/RELEASEDIR, which drop one."""

from libc.errno cimport EINVAL, EBADF, EISDIR, ENOTDIR
from libc cimport errno as cerrno
from libc.stdint cimport uint8_t, uint64_t

from _vmcore.fs.abi cimport *
from _vmcore.fs.inodes cimport Inode, reopen
from _vmcore.fs.state cimport ServerState


cdef class Handle:
    def __dealloc__(self):
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1


cdef uint64_t new_handle(ServerState srv, int fd, Inode ino, bint is_dir, bint writable):
    cdef Handle hd = Handle()
    hd.fd = fd
    hd.inode = ino
    hd.is_dir = is_dir
    hd.writable = writable
    fh = srv.next_fh
    srv.next_fh += 1
    srv.handles[fh] = hd
    return fh


cdef Handle file_handle(ServerState srv, Inode ino, uint64_t fh, bint want_dir):
    """The open file ``fh`` names; with no-open, where the kernel sends ``fh`` 0, a descriptor of ``ino`` for
    this request only (a handle in no table: it closes when the request is done). None: no such file, and
    ``no_file`` says why."""
    cdef Handle hd
    cdef int fd
    if fh == 0 and srv.no_open and ino is not None:
        if (ino.kind == S_IFDIR) != want_dir:
            cerrno.errno = EISDIR if ino.kind == S_IFDIR else ENOTDIR
            return None
        fd = reopen(srv, ino, O_RDONLY | (O_DIRECTORY if want_dir else 0))
        if fd < 0:
            return None         # errno from the reopen: EACCES, EMFILE, ... (the open the guest never sent)
        hd = Handle()
        hd.fd = fd
        hd.inode = ino
        hd.is_dir = want_dir
        return hd
    hd = srv.handles.get(fh)
    if hd is None or hd.is_dir != want_dir:
        cerrno.errno = EBADF
        return None
    return hd


cdef Py_ssize_t no_file() noexcept:
    """Why ``file_handle`` found none (errno as it left it; EMFILE is reported by ``FuseServer._handle``)."""
    return -cerrno.errno if cerrno.errno else -EBADF


cdef Py_ssize_t op_release(ServerState srv, const uint8_t *b, size_t n):
    if n < 8:
        return -EINVAL
    srv.handles.pop((<const fuse_release_in *>b).fh, None)   # the handle closes its descriptor
    return 0
