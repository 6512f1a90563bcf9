# cython: language_level=3
"""What the FUSE server's request handlers share: the descriptors, the inode and handle tables, the timeouts and the
quota account. A base class of ``server.FuseServer``, declared here so the handler modules can cimport it without
cimporting the server that dispatches to them."""

from libc.stdint cimport uint32_t, uint64_t
from _vmcore.fs.quota cimport QuotaAccount


cdef class ServerState:
    cdef int proc_fd            # /proc/self/fd: files are reopened through their magic links, never by path
    cdef dict inodes, by_key    # nodeid -> inodes.Inode; (st_dev, st_ino) -> nodeid
    cdef dict handles           # fh -> handles.Handle
    cdef uint64_t next_nodeid, next_fh
    cdef readonly bint readonly
    cdef QuotaAccount account   # None: no quota
    cdef uint64_t t_sec          # how long the guest may trust a name and its attributes
    cdef uint32_t t_nsec
    cdef bint switch_creds       # running as root: create as the caller (setfsuid/setfsgid)
    cdef uint32_t open_flags     # FOPEN_* flags given to every OPEN/CREATE reply
    cdef uint64_t neg_sec        # how long the guest may remember that a name does not exist (0: not at all)
    cdef uint32_t neg_nsec
    cdef readonly bint no_open   # OPEN/OPENDIR answer ENOSYS: the kernel opens without asking from then on
