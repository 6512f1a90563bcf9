# cython: language_level=3
"""Creating files as the guest's caller: the server switches its file system uid and gid (``setfsuid``/``setfsgid``)
around a create, so new files get the owner and group they would get on a local file system, while it keeps the power
to bypass permission bits. Apart from the handlers because it is the one place the server changes its credentials."""

from libc.stdint cimport uint32_t
from posix.types cimport uid_t, gid_t

cdef extern from "<sys/fsuid.h>" nogil:
    int setfsuid(uid_t uid)
    int setfsgid(gid_t gid)

cdef extern from "<linux/capability.h>" nogil:
    ctypedef struct cap_header "struct __user_cap_header_struct":
        uint32_t version
        int pid
    ctypedef struct cap_data "struct __user_cap_data_struct":
        uint32_t effective
        uint32_t permitted
        uint32_t inheritable
    enum: _LINUX_CAPABILITY_VERSION_3, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH

cdef extern from "<sys/syscall.h>" nogil:
    long syscall(long number, ...)
    enum: SYS_capget, SYS_capset


cdef void become(bint switch_creds, uint32_t uid, uint32_t gid) noexcept:
    """Create as the caller (owner and group as on a local file system), keeping the server's power to
    bypass permission bits: the client already checked them (default_permissions), the host must not
    refuse for lack of supplementary groups. Thread-local (fsuid/fsgid and capabilities are per thread)."""
    cdef cap_header hdr
    cdef cap_data data[2]
    if not switch_creds or (uid == 0 and gid == 0):
        return
    setfsgid(gid)
    setfsuid(uid)
    if uid != 0:   # a non-zero fsuid drops the file capabilities from the effective set: take two back
        hdr.version = _LINUX_CAPABILITY_VERSION_3
        hdr.pid = 0
        if syscall(SYS_capget, &hdr, data) == 0:
            data[0].effective |= (1 << CAP_DAC_OVERRIDE) | (1 << CAP_DAC_READ_SEARCH)
            syscall(SYS_capset, &hdr, data)


cdef void unbecome(bint switch_creds, uint32_t uid, uint32_t gid) noexcept:
    if not switch_creds or (uid == 0 and gid == 0):
        return
    setfsuid(0)    # back to fsuid 0: the permitted capabilities return to the effective set
    setfsgid(0)
