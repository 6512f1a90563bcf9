# cython: language_level=3
"""FUSE requests on a regular file's data: OPEN, READ and WRITE (zero copy where the transport hands the guest's
pages as ``iovec``), FSYNC, LSEEK, FALLOCATE and COPY_FILE_RANGE, each charged to the quota where it allocates."""

from libc.errno cimport EINVAL, ENOSYS, EBADF, EROFS, ENOSPC, EISDIR, EOPNOTSUPP, EFBIG
from libc.string cimport memcpy, memset
from libc.stdint cimport uint8_t, uint32_t, uint64_t, int64_t, INT64_MAX
from posix.stat cimport struct_stat
from posix.types cimport off_t
from posix.uio cimport iovec, preadv, pwritev

from _vmcore.fs.abi cimport *
from _vmcore.fs.charge cimport reserve_write, settle_file, round_up, BLOCK
from _vmcore.fs.handles cimport Handle, new_handle, file_handle, no_file
from _vmcore.fs.inodes cimport Inode, reopen
from _vmcore.fs.state cimport ServerState
from _vmcore.fs.wire cimport neg_errno, iov_total, iov_trim, iov_skip, PASS_FLAGS, STAT_FLAGS

cdef enum:
    FALLOC_PUNCH_HOLE = 0x02
    FALLOC_ZERO_RANGE = 0x10


cdef Py_ssize_t op_open(ServerState srv, Inode ino, const uint8_t *b, size_t n, uint8_t *o):
    cdef struct_stat st
    cdef fuse_open_out *r = <fuse_open_out *>o
    if n < 4:
        return -EINVAL
    cdef int flags = (<const fuse_open_in *>b).flags
    cdef int acc = flags & O_ACCMODE
    if ino.kind == S_IFDIR:
        return -EISDIR
    if srv.readonly and (acc != O_RDONLY or flags & O_TRUNC):
        return -EROFS
    if srv.no_open:
        return -ENOSYS          # from now on the kernel opens without asking; reads name the inode (``file_handle``)
    cdef int64_t before = 0
    if flags & O_TRUNC and srv.account is not None and fstatat(ino.fd, "", &st, STAT_FLAGS) == 0:
        before = <int64_t>st.st_blocks * 512
    cdef int fd = reopen(srv, ino, flags & PASS_FLAGS)
    if fd < 0:
        return neg_errno()
    if flags & O_TRUNC:
        settle_file(srv.account, 0, before, fd)
    memset(r, 0, sizeof(fuse_open_out))
    r.open_flags = srv.open_flags
    r.fh = new_handle(srv, fd, ino, False, acc != O_RDONLY)
    return sizeof(fuse_open_out)


cdef Py_ssize_t op_read(ServerState srv, Inode ino, const uint8_t *b, size_t n, uint8_t *o, size_t cap,
                        iovec *data, int ndata):
    cdef fuse_read_in r
    cdef ssize_t got = 0
    cdef size_t want, done = 0
    cdef iovec single
    cdef int first = 0
    if n < 24:
        return -EINVAL
    memcpy(&r, b, 24)
    cdef Handle hd = file_handle(srv, ino, r.fh, False)
    if hd is None:
        return no_file()
    if r.offset > <uint64_t>INT64_MAX:
        return -EINVAL
    if data == NULL:
        single.iov_base = o
        single.iov_len = cap
        data = &single
        ndata = 1
    want = min(<size_t>r.size, iov_total(data, ndata))
    ndata = iov_trim(data, ndata, want)
    cdef int fd = hd.fd
    cdef int64_t off = r.offset
    with nogil:
        while done < want:
            got = preadv(fd, data + first, ndata - first, off + done)
            if got <= 0:
                break
            done += got
            first += iov_skip(data + first, ndata - first, got)
    if done == 0 and got < 0:
        return neg_errno()
    return done


cdef Py_ssize_t op_write(ServerState srv, const uint8_t *b, size_t n, uint8_t *o, iovec *data, int ndata):
    cdef fuse_write_in w
    cdef struct_stat st
    cdef ssize_t put = 0
    cdef size_t size, done = 0
    cdef int64_t growth, end, real
    cdef iovec single
    cdef int first = 0
    if n < sizeof(fuse_write_in):
        return -EINVAL
    memcpy(&w, b, sizeof(fuse_write_in))
    size = w.size
    if data == NULL:
        single.iov_base = <void *>(b + sizeof(fuse_write_in))
        single.iov_len = n - sizeof(fuse_write_in)
        data = &single
        ndata = 1
    if size > iov_total(data, ndata):
        return -EINVAL                               # claims more data than the request carries
    if w.offset > <uint64_t>(INT64_MAX - size):
        return -EFBIG
    cdef Handle hd = file_handle(srv, None, w.fh, False)
    if hd is None:
        return -EBADF
    if not hd.writable:
        return -EBADF
    cdef int fd = hd.fd
    cdef int64_t off = w.offset
    cdef int64_t reserved = 0, length = size
    if srv.account is not None and size:
        if fstat(fd, &st) < 0:
            return neg_errno()
        reserved = reserve_write(srv.account, &st, off, &length)     # only part of it may fit: written up to the limit
        if reserved < 0:
            return -ENOSPC
        size = <size_t>length
    ndata = iov_trim(data, ndata, size)
    with nogil:
        while done < size:
            put = pwritev(fd, data + first, ndata - first, off + done)
            if put <= 0:
                break
            done += put
            first += iov_skip(data + first, ndata - first, put)
    if srv.account is not None and size:
        settle_file(srv.account, reserved, <int64_t>st.st_blocks * 512, fd)
    if done == 0 and put < 0:
        return neg_errno()
    memset(o, 0, sizeof(fuse_write_out))
    (<fuse_write_out *>o).size = <uint32_t>done
    return sizeof(fuse_write_out)


cdef Py_ssize_t op_fsync(ServerState srv, Inode ino, const uint8_t *b, size_t n):
    cdef int rc
    if n < sizeof(fuse_fsync_in):
        return -EINVAL
    if (<const fuse_fsync_in *>b).fh == 0 and srv.no_open:
        return 0                # opened without asking: read-only, nothing of the guest's to flush
    cdef Handle hd = srv.handles.get((<const fuse_fsync_in *>b).fh)
    if hd is None:
        return -EBADF
    cdef int fd = hd.fd
    cdef bint data_only = (<const fuse_fsync_in *>b).fsync_flags & 1
    with nogil:
        rc = fdatasync(fd) if data_only else fsync(fd)
    return neg_errno() if rc < 0 else 0


cdef Py_ssize_t op_lseek(ServerState srv, Inode ino, const uint8_t *b, size_t n, uint8_t *o):
    if n < sizeof(fuse_lseek_in):
        return -EINVAL
    cdef fuse_lseek_in s
    memcpy(&s, b, sizeof(fuse_lseek_in))
    cdef Handle hd = file_handle(srv, ino, s.fh, False)
    if hd is None:
        return no_file()
    if s.offset > <uint64_t>INT64_MAX:
        return -EINVAL
    cdef int64_t pos = lseek(hd.fd, s.offset, s.whence)
    if pos < 0:
        return neg_errno()
    (<fuse_lseek_out *>o).offset = pos
    return sizeof(fuse_lseek_out)


cdef Py_ssize_t op_fallocate(ServerState srv, const uint8_t *b, size_t n):
    cdef fuse_fallocate_in f
    cdef struct_stat st
    cdef int rc
    cdef int64_t growth = 0
    if n < sizeof(fuse_fallocate_in):
        return -EINVAL
    memcpy(&f, b, sizeof(fuse_fallocate_in))
    cdef Handle hd = file_handle(srv, None, f.fh, False)
    if hd is None or not hd.writable:
        return -EBADF
    if f.offset > <uint64_t>INT64_MAX or f.length > <uint64_t>INT64_MAX - f.offset:
        return -EFBIG
    # Only what the kernel's FUSE client sends; anything else (COLLAPSE, INSERT, UNSHARE...) is refused.
    if f.mode not in (0, FALLOC_FL_KEEP_SIZE, FALLOC_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, FALLOC_ZERO_RANGE,
                      FALLOC_ZERO_RANGE | FALLOC_FL_KEEP_SIZE):
        return -EOPNOTSUPP
    if srv.account is not None:
        if fstat(hd.fd, &st) < 0:
            return neg_errno()
        if not f.mode & FALLOC_PUNCH_HOLE:
            growth = round_up(<int64_t>f.length) + BLOCK
            if not srv.account.reserve(growth):
                return -ENOSPC
    cdef int fd = hd.fd
    with nogil:
        rc = fallocate(fd, f.mode, f.offset, f.length)
    err = neg_errno()
    if srv.account is not None:
        settle_file(srv.account, growth, <int64_t>st.st_blocks * 512, fd)
    return err if rc < 0 else 0


cdef Py_ssize_t op_copy_file_range(ServerState srv, const uint8_t *b, size_t n, uint8_t *o):
    cdef fuse_copy_file_range_in c
    cdef struct_stat st
    cdef ssize_t got = 0
    cdef int64_t growth = 0, real, off_in, off_out
    cdef size_t length
    if n < sizeof(fuse_copy_file_range_in):
        return -EINVAL
    memcpy(&c, b, sizeof(fuse_copy_file_range_in))
    if c.flags != 0:
        return -EINVAL
    cdef Handle src = file_handle(srv, None, c.fh_in, False)
    cdef Handle dst = file_handle(srv, None, c.fh_out, False)
    if src is None or dst is None or not dst.writable:
        return -EBADF
    if c.off_in > <uint64_t>INT64_MAX or c.off_out > <uint64_t>INT64_MAX:
        return -EINVAL
    length = min(c.len, <uint64_t>(1 << 30))
    if c.off_out > <uint64_t>INT64_MAX - length:
        return -EFBIG
    off_in = c.off_in
    off_out = c.off_out
    cdef int64_t want = length
    if srv.account is not None and length:
        if fstat(dst.fd, &st) < 0:
            return neg_errno()
        growth = reserve_write(srv.account, &st, off_out, &want)
        if growth < 0:
            return -ENOSPC
        length = <size_t>want
    cdef int fd_in = src.fd, fd_out = dst.fd
    with nogil:
        got = copy_file_range(fd_in, <off_t *>&off_in, fd_out, <off_t *>&off_out, length, 0)
    err = neg_errno()
    if srv.account is not None and length:
        settle_file(srv.account, growth, <int64_t>st.st_blocks * 512, fd_out)
    if got < 0:
        return err
    memset(o, 0, sizeof(fuse_write_out))
    (<fuse_write_out *>o).size = <uint32_t>got
    return sizeof(fuse_write_out)
