# cython: language_level=3
"""Requests about an inode rather than its contents (see ``attrs.pyx``)."""

from libc.stdint cimport uint8_t
from _vmcore.fs.inodes cimport Inode
from _vmcore.fs.state cimport ServerState

cdef Py_ssize_t op_lookup(ServerState srv, Inode parent, const uint8_t *b, size_t n, uint8_t *o)
cdef Py_ssize_t op_getattr(ServerState srv, Inode ino, const uint8_t *b, size_t n, uint8_t *o)
cdef Py_ssize_t op_setattr(ServerState srv, Inode ino, const uint8_t *b, size_t n, uint8_t *o)
cdef Py_ssize_t op_access(ServerState srv, Inode ino, const uint8_t *b, size_t n)
cdef Py_ssize_t op_readlink(ServerState srv, Inode ino, uint8_t *o, size_t cap)
cdef Py_ssize_t op_statfs(ServerState srv, Inode ino, uint8_t *o)
