# cython: language_level=3
"""FUSE requests that list a directory: OPENDIR and READDIR/READDIRPLUS (``getdents64`` straight into the reply;
the PLUS form looks each name up, as LOOKUP would)."""

from libc.errno cimport EINVAL, ENOSYS, ENOTDIR, ENOSPC
from libc.stdlib cimport malloc, free
from libc.string cimport memchr, memcpy, memset
from libc.stdint cimport uint8_t, uint32_t, uint64_t, INT64_MAX

from _vmcore.fs.abi cimport *
from _vmcore.fs.handles cimport Handle, new_handle, file_handle, no_file
from _vmcore.fs.inodes cimport Inode, entry_at, reopen
from _vmcore.fs.state cimport ServerState
from _vmcore.fs.wire cimport neg_errno, NAME_MAX


cdef Py_ssize_t op_opendir(ServerState srv, Inode ino, uint8_t *o):
    cdef fuse_open_out *r = <fuse_open_out *>o
    if ino.kind != S_IFDIR:
        return -ENOTDIR
    if srv.no_open:
        return -ENOSYS          # ... and caches the listings it reads (FOPEN_CACHE_DIR, its no-open default)
    cdef int fd = reopen(srv, ino, O_RDONLY | O_DIRECTORY)
    if fd < 0:
        return neg_errno()
    memset(r, 0, sizeof(fuse_open_out))
    r.fh = new_handle(srv, fd, ino, True, False)
    return sizeof(fuse_open_out)


cdef Py_ssize_t op_readdir(ServerState srv, Inode ino, const uint8_t *b, size_t n, uint8_t *o, size_t cap, bint plus):
    cdef fuse_read_in r
    cdef ssize_t got = 0
    cdef size_t pos = 0, at, need, namelen, bufsize
    cdef dirent64 *d
    cdef fuse_dirent *fd_ent
    cdef fuse_direntplus *fp
    cdef char *buf
    cdef Py_ssize_t rc
    if n < 24:
        return -EINVAL
    memcpy(&r, b, 24)
    cdef Handle hd = file_handle(srv, ino, r.fh, True)
    if hd is None:
        return no_file()
    if r.offset > <uint64_t>INT64_MAX:
        return -EINVAL
    cap = min(cap, <size_t>r.size)
    cdef int dirfd = hd.fd
    if lseek(hd.fd, r.offset, SEEK_SET) < 0:
        return neg_errno()
    bufsize = 32768
    buf = <char *>malloc(bufsize)
    if buf == NULL:
        return -ENOSPC
    try:
        while True:
            with nogil:
                got = getdents64(dirfd, buf, bufsize)
            if got < 0:
                return neg_errno() if pos == 0 else pos
            if got == 0:
                return pos
            at = 0
            while at < <size_t>got:
                d = <dirent64 *>(buf + at)
                at += d.d_reclen
                namelen = <size_t>(<char *>memchr(d.d_name, 0, NAME_MAX + 1) - d.d_name)
                if plus:
                    need = (sizeof(fuse_direntplus) + namelen + 7) & ~(<size_t>7)
                else:
                    need = (sizeof(fuse_dirent) + namelen + 7) & ~(<size_t>7)
                if pos + need > cap:
                    return pos                       # the next READDIR restarts at this entry's offset
                if plus:
                    fp = <fuse_direntplus *>(o + pos)
                    memset(fp, 0, need)
                    fd_ent = &fp.dirent
                    if not (d.d_name[0] == 46 and (namelen == 1 or (namelen == 2 and d.d_name[1] == 46))):
                        rc = entry_at(srv, hd.inode, d.d_name, &fp.entry_out)
                        if rc < 0:
                            memset(&fp.entry_out, 0, sizeof(fuse_entry_out))
                else:
                    fd_ent = <fuse_dirent *>(o + pos)
                    memset(fd_ent, 0, need)
                fd_ent.ino = d.d_ino
                fd_ent.off = d.d_off
                fd_ent.namelen = <uint32_t>namelen
                fd_ent.type = d.d_type
                memcpy(<char *>fd_ent + sizeof(fuse_dirent), d.d_name, namelen)
                pos += need
    finally:
        free(buf)
