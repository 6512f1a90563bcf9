# cython: language_level=3
"""C-level face of the FUSE server core, for transports written in Cython (``/dev/fuse``, virtio-fs)."""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from posix.uio cimport iovec
from _vmcore.fs.abi cimport fuse_in_header
from _vmcore.fs.state cimport ServerState


cdef class FuseServer(ServerState):
    cdef int root_fd
    cdef bint initialized, closed
    cdef readonly uint32_t max_write
    cdef uint64_t counts[64]     # requests served, by opcode (the last slot: everything past 62)
    cdef bint warned_fd_limit    # the first EMFILE was reported on stderr
    cdef object __weakref__

    cdef Py_ssize_t handle_raw(self, const uint8_t *req, size_t reqlen, uint8_t *out, size_t outcap) noexcept
    cdef Py_ssize_t handle_data(self, const uint8_t *req, size_t reqlen, uint8_t *out, size_t outcap,
                                iovec *data, int ndata) noexcept
    cdef Py_ssize_t _handle(self, const uint8_t *req, size_t reqlen, uint8_t *out, size_t outcap, iovec *data,
                            int ndata) noexcept
    # private helpers (declared here because Cython requires it for cdef methods of a .pxd class); the request
    # handlers are functions of their own modules (attrs, files, dirs, namespace, handles, inodes)
    cdef void _close_fds(self) noexcept
    cdef Py_ssize_t _dispatch(self, const fuse_in_header *h, const uint8_t *b, size_t n, uint8_t *o, size_t cap,
                              iovec *data, int ndata)
    cdef Py_ssize_t _init(self, const uint8_t *b, size_t n, uint8_t *o)
    cdef void _reset(self)
