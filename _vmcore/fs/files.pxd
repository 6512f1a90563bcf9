# cython: language_level=3
"""Requests on a file's data (see ``files.pyx``)."""

from libc.stdint cimport uint8_t
from posix.uio cimport iovec
from _vmcore.fs.inodes cimport Inode
from _vmcore.fs.state cimport ServerState

cdef Py_ssize_t op_open(ServerState srv, Inode ino, const uint8_t *b, size_t n, uint8_t *o)
cdef Py_ssize_t op_read(ServerState srv, Inode ino, const uint8_t *b, size_t n, uint8_t *o, size_t cap,
                        iovec *data, int ndata)
cdef Py_ssize_t op_write(ServerState srv, const uint8_t *b, size_t n, uint8_t *o, iovec *data, int ndata)
cdef Py_ssize_t op_fsync(ServerState srv, Inode ino, const uint8_t *b, size_t n)
cdef Py_ssize_t op_lseek(ServerState srv, Inode ino, const uint8_t *b, size_t n, uint8_t *o)
cdef Py_ssize_t op_fallocate(ServerState srv, const uint8_t *b, size_t n)
cdef Py_ssize_t op_copy_file_range(ServerState srv, const uint8_t *b, size_t n, uint8_t *o)
