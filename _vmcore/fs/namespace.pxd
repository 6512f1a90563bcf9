# cython: language_level=3
"""Requests that add, remove or rename names (see ``namespace.pyx``)."""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from _vmcore.fs.inodes cimport Inode
from _vmcore.fs.state cimport ServerState

cdef Py_ssize_t op_create(ServerState srv, Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
                          uint32_t gid)
cdef Py_ssize_t op_mkdir(ServerState srv, Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
                         uint32_t gid)
cdef Py_ssize_t op_mknod(ServerState srv, Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
                         uint32_t gid)
cdef Py_ssize_t op_symlink(ServerState srv, Inode parent, const uint8_t *b, size_t n, uint8_t *o, uint32_t uid,
                           uint32_t gid)
cdef Py_ssize_t op_link(ServerState srv, Inode parent, const uint8_t *b, size_t n, uint8_t *o)
cdef Py_ssize_t op_unlink(ServerState srv, Inode parent, const uint8_t *b, size_t n, int flags)
cdef Py_ssize_t op_rename(ServerState srv, Inode parent, uint64_t newdir, uint32_t flags, const uint8_t *b, size_t n)
