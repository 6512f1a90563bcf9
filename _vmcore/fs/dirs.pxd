# cython: language_level=3
"""Requests that list a directory (see ``dirs.pyx``)."""

from libc.stdint cimport uint8_t
from _vmcore.fs.inodes cimport Inode
from _vmcore.fs.state cimport ServerState

cdef Py_ssize_t op_opendir(ServerState srv, Inode ino, uint8_t *o)
cdef Py_ssize_t op_readdir(ServerState srv, Inode ino, const uint8_t *b, size_t n, uint8_t *o, size_t cap, bint plus)
