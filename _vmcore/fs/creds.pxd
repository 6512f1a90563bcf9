# cython: language_level=3
"""Creating files as the guest's caller (see ``creds.pyx``)."""

from libc.stdint cimport uint32_t

cdef void become(bint switch_creds, uint32_t uid, uint32_t gid) noexcept
cdef void unbecome(bint switch_creds, uint32_t uid, uint32_t gid) noexcept
