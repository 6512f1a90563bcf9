# cython: language_level=3
"""Serving one FUSE request carried by a virtqueue descriptor chain (the virtio-fs data path).

Kept apart from the device class so it builds and is tested without the VMM: it needs only the guest memory's
host base address and size, and the chain's ``(guest_addr, length, writable)`` segments, readable ones first.

The request (device-readable part) is always copied into private memory before it is parsed: another vCPU could
rewrite guest memory mid-request, and a name checked for ``/`` and ``..`` must be the name that reaches
``openat``. The reply goes straight into guest memory when the driver gave one writable buffer big enough (the
server never reads back what it wrote), otherwise through a private buffer scattered afterwards.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy

from _vmcore.fs.server cimport FuseServer

cdef enum:
    OUT_HDR = 16
    MIN_REPLY = 16 + 256
    MAX_REQUEST = (1 << 20) + 8192       # a whole max_write WRITE plus headers


class ChainError(ValueError):
    """A descriptor chain that cannot carry a FUSE request (outside guest memory, too short, too long)."""


def serve_chain(FuseServer server, uint64_t base, uint64_t mem_size, list segments) -> int:
    """Serve the FUSE request in ``segments`` of guest memory mapped at host address ``base`` (``mem_size``
    bytes); returns the number of bytes written into the writable segments (the used-ring length)."""
    cdef uint64_t addr, length, rlen = 0, wlen = 0, done, take
    cdef uint64_t w_addr = 0
    cdef int n_writable = 0
    cdef Py_ssize_t n
    cdef uint8_t *req
    cdef uint8_t *out
    cdef bint direct
    for seg in segments:
        addr, length = seg[0], seg[1]
        if length > mem_size or addr > mem_size - length:
            raise ChainError("descriptor outside guest memory")
        if seg[2]:
            wlen += length
            n_writable += 1
            w_addr = addr
        else:
            if n_writable:
                raise ChainError("device-readable descriptor after a writable one")
            rlen += length
    if rlen > MAX_REQUEST:
        raise ChainError("request larger than any FUSE request we accept")
    req = <uint8_t *>malloc(rlen if rlen else 1)
    if req == NULL:
        raise MemoryError()
    direct = n_writable == 1 and wlen >= MIN_REPLY
    out = <uint8_t *><uintptr_t>(base + w_addr) if direct else <uint8_t *>malloc(max(wlen, <uint64_t>MIN_REPLY))
    if out == NULL:
        free(req)
        raise MemoryError()
    try:
        done = 0
        for seg in segments:
            if seg[2]:
                break
            addr, length = seg[0], seg[1]
            memcpy(req + done, <uint8_t *><uintptr_t>(base + addr), length)
            done += length
        n = server.handle_raw(req, rlen, out, wlen if direct else max(wlen, <uint64_t>MIN_REPLY))
        if n <= 0 or direct:
            return n if n > 0 else 0
        if <uint64_t>n > wlen:                   # the driver left no room for this reply: say so if it can hear
            if wlen < OUT_HDR:
                return 0
            (<uint32_t *>out)[0] = OUT_HDR
            (<int *>(out + 4))[0] = -5           # EIO
            n = OUT_HDR
        done = 0
        for seg in segments:
            if not seg[2] or done >= <uint64_t>n:
                continue
            addr, length = seg[0], seg[1]
            take = min(length, <uint64_t>n - done)
            memcpy(<uint8_t *><uintptr_t>(base + addr), out + done, take)
            done += take
        return n
    finally:
        free(req)
        if not direct:
            free(out)
