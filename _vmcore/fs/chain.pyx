# cython: language_level=3
"""Serving one FUSE request carried by a virtqueue descriptor chain (the virtio-fs data path).

Kept apart from the device class so it builds and is tested without the VMM: it needs only the guest memory's
host base address and size, and the chain's ``(guest_addr, length, writable)`` segments, readable ones first.

The request (device-readable part) is always copied into private memory before it is parsed: another vCPU could
rewrite guest memory mid-request, and a name checked for ``/`` and ``..`` must be the name that reaches
``openat``. The reply goes straight into guest memory when the driver gave one writable buffer big enough (the
server never reads back what it wrote), otherwise through a private buffer scattered afterwards. READ and WRITE
keep only their header and arguments private: their data moves between the file and the guest's pages with
``preadv``/``pwritev`` (file contents are never interpreted, so sharing them is safe).
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy
from posix.uio cimport iovec

from _vmcore.fs.server cimport FuseServer

cdef enum:
    OUT_HDR = 16
    MIN_REPLY = 16 + 256
    MAX_REQUEST = (1 << 20) + 8192       # a whole max_write WRITE plus headers
    RW_ARGS = 80                         # fuse_in_header + fuse_read_in / fuse_write_in
    OP_READ = 15
    OP_WRITE = 16


cdef size_t gather(uint64_t base, list segments, bint writable, size_t skip, uint8_t *dst, size_t n):
    """Copy up to ``n`` bytes of the readable (or writable) part, from byte ``skip``, into ``dst``."""
    cdef uint64_t addr, length, take
    cdef size_t done = 0
    for seg in segments:
        if bool(seg[2]) != writable or done >= n:
            continue
        addr, length = seg[0], seg[1]
        if skip >= length:
            skip -= length
            continue
        take = min(length - skip, n - done)
        memcpy(dst + done, <uint8_t *><uintptr_t>(base + addr + skip), take)
        done += take
        skip = 0
    return done


cdef size_t scatter(uint64_t base, list segments, const uint8_t *src, size_t n):
    """Copy ``n`` bytes of ``src`` into the writable part, from its start."""
    cdef uint64_t addr, length, take
    cdef size_t done = 0
    for seg in segments:
        if not seg[2] or done >= n:
            continue
        addr, length = seg[0], seg[1]
        take = min(length, n - done)
        memcpy(<uint8_t *><uintptr_t>(base + addr), src + done, take)
        done += take
    return done


cdef int guest_iov(uint64_t base, list segments, bint writable, size_t skip, iovec *iov) noexcept:
    """Point ``iov`` at the readable (or writable) part of the chain after its first ``skip`` bytes."""
    cdef uint64_t addr, length
    cdef int cnt = 0
    for seg in segments:
        if bool(seg[2]) != writable:
            continue
        addr, length = seg[0], seg[1]
        if skip >= length:
            skip -= length
            continue
        iov[cnt].iov_base = <void *><uintptr_t>(base + addr + skip)
        iov[cnt].iov_len = length - skip
        cnt += 1
        skip = 0
    return cnt


cdef Py_ssize_t serve_data(FuseServer server, uint64_t base, list segments, uint64_t rlen, uint64_t wlen,
                           const uint8_t *args, uint32_t opcode) except -1:
    """READ and WRITE: private arguments, data straight between the file and guest pages."""
    cdef uint8_t reply[MIN_REPLY]
    cdef iovec *iov = <iovec *>malloc(len(segments) * sizeof(iovec))
    cdef int cnt
    cdef Py_ssize_t n
    if iov == NULL:
        raise MemoryError()
    try:
        if opcode == OP_WRITE:
            cnt = guest_iov(base, segments, False, RW_ARGS, iov)
        else:
            cnt = guest_iov(base, segments, True, OUT_HDR, iov)
        n = server.handle_data(args, RW_ARGS, reply, MIN_REPLY, iov, cnt)
    finally:
        free(iov)
    if n <= 0:
        return 0
    if opcode == OP_READ:
        scatter(base, segments, reply, OUT_HDR)   # the data is already in place behind the header
        return n
    if <uint64_t>n > wlen:
        if wlen < OUT_HDR:
            return 0
        (<uint32_t *>reply)[0] = OUT_HDR
        (<int *>(reply + 4))[0] = -5             # EIO: no room for the reply
        n = OUT_HDR
    scatter(base, segments, reply, n)
    return n


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
    cdef uint8_t args[RW_ARGS]
    cdef uint32_t opcode = 0
    if rlen >= RW_ARGS:
        gather(base, segments, False, 0, args, RW_ARGS)
        memcpy(&opcode, args + 4, 4)
        if opcode == OP_WRITE or (opcode == OP_READ and wlen >= OUT_HDR):
            return serve_data(server, base, segments, rlen, wlen, args, opcode)
    req = <uint8_t *>malloc(rlen if rlen else 1)
    if req == NULL:
        raise MemoryError()
    direct = n_writable == 1 and wlen >= MIN_REPLY
    out = <uint8_t *><uintptr_t>(base + w_addr) if direct else <uint8_t *>malloc(max(wlen, <uint64_t>MIN_REPLY))
    if out == NULL:
        free(req)
        raise MemoryError()
    try:
        gather(base, segments, False, 0, req, rlen)
        n = server.handle_raw(req, rlen, out, wlen if direct else max(wlen, <uint64_t>MIN_REPLY))
        if n <= 0 or direct:
            return n if n > 0 else 0
        if <uint64_t>n > wlen:                   # the driver left no room for this reply: say so if it can hear
            if wlen < OUT_HDR:
                return 0
            (<uint32_t *>out)[0] = OUT_HDR
            (<int *>(out + 4))[0] = -5           # EIO
            n = OUT_HDR
        scatter(base, segments, out, n)
        return n
    finally:
        free(req)
        if not direct:
            free(out)
