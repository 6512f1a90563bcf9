# cython: language_level=3
"""The inode table of the FUSE server (see ``inodes.pyx``)."""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from posix.stat cimport struct_stat
from _vmcore.fs.abi cimport fuse_entry_out
from _vmcore.fs.state cimport ServerState


cdef class Inode:
    cdef int fd                 # O_PATH | O_NOFOLLOW descriptor: the inode itself, never a path
    cdef uint64_t dev, ino, nlookup
    cdef uint32_t kind          # st_mode & S_IFMT, fixed for the inode's life


cdef uint64_t intern(ServerState srv, int fd, const struct_stat *st)
cdef void forget(ServerState srv, uint64_t nodeid, uint64_t count)
cdef void batch_forget(ServerState srv, const uint8_t *b, size_t n)
cdef void fill_entry(ServerState srv, fuse_entry_out *e, uint64_t nodeid, const struct_stat *st) noexcept
cdef Py_ssize_t entry_at(ServerState srv, Inode directory, const char *name, fuse_entry_out *e)
cdef Py_ssize_t entry_from_open_fd(ServerState srv, int fd, fuse_entry_out *e)
cdef int reopen(ServerState srv, Inode ino, int flags)
