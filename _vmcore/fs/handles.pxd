# cython: language_level=3
"""The open-handle table of the FUSE server (see ``handles.pyx``)."""

from libc.stdint cimport uint8_t, uint64_t
from _vmcore.fs.inodes cimport Inode
from _vmcore.fs.state cimport ServerState


cdef class Handle:
    cdef int fd                 # a real open descriptor (file or directory)
    cdef bint is_dir, writable
    cdef Inode inode


cdef uint64_t new_handle(ServerState srv, int fd, Inode ino, bint is_dir, bint writable)
cdef Handle file_handle(ServerState srv, Inode ino, uint64_t fh, bint want_dir)
cdef Py_ssize_t no_file() noexcept
cdef Py_ssize_t op_release(ServerState srv, const uint8_t *b, size_t n)
