# cython: language_level=3
"""Declarations only: the FUSE wire structures (from the system's ``<linux/fuse.h>``) and the ``*at`` syscalls
the server uses. No code lives here, so any module of the package can ``cimport`` it."""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int32_t, int64_t
from posix.types cimport mode_t, dev_t, off_t, uid_t, gid_t
from posix.time cimport timespec
from posix.stat cimport struct_stat

cdef extern from "<linux/fuse.h>" nogil:
    enum: FUSE_KERNEL_VERSION
    enum: FUSE_KERNEL_MINOR_VERSION
    enum: FUSE_ROOT_ID
    enum:
        FUSE_LOOKUP, FUSE_FORGET, FUSE_GETATTR, FUSE_SETATTR, FUSE_READLINK, FUSE_SYMLINK, FUSE_MKNOD,
        FUSE_MKDIR, FUSE_UNLINK, FUSE_RMDIR, FUSE_RENAME, FUSE_LINK, FUSE_OPEN, FUSE_READ, FUSE_WRITE,
        FUSE_STATFS, FUSE_RELEASE, FUSE_FSYNC, FUSE_SETXATTR, FUSE_GETXATTR, FUSE_LISTXATTR,
        FUSE_REMOVEXATTR, FUSE_FLUSH, FUSE_INIT, FUSE_OPENDIR, FUSE_READDIR, FUSE_RELEASEDIR,
        FUSE_FSYNCDIR, FUSE_ACCESS, FUSE_CREATE, FUSE_INTERRUPT, FUSE_DESTROY, FUSE_BATCH_FORGET,
        FUSE_FALLOCATE, FUSE_READDIRPLUS, FUSE_RENAME2, FUSE_LSEEK, FUSE_COPY_FILE_RANGE
    enum:
        FATTR_MODE, FATTR_UID, FATTR_GID, FATTR_SIZE, FATTR_ATIME, FATTR_MTIME, FATTR_FH,
        FATTR_ATIME_NOW, FATTR_MTIME_NOW
    enum:
        FUSE_ASYNC_READ, FUSE_ATOMIC_O_TRUNC, FUSE_BIG_WRITES, FUSE_DO_READDIRPLUS, FUSE_READDIRPLUS_AUTO,
        FUSE_PARALLEL_DIROPS, FUSE_MAX_PAGES, FUSE_CACHE_SYMLINKS, FUSE_AUTO_INVAL_DATA, FUSE_GETATTR_FH
    enum: FOPEN_KEEP_CACHE

    struct fuse_in_header:
        uint32_t len
        uint32_t opcode
        uint64_t unique
        uint64_t nodeid
        uint32_t uid
        uint32_t gid
        uint32_t pid
    struct fuse_out_header:
        uint32_t len
        int32_t error
        uint64_t unique
    struct fuse_attr:
        uint64_t ino, size, blocks, atime, mtime, ctime
        uint32_t atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize, flags
    struct fuse_entry_out:
        uint64_t nodeid, generation, entry_valid, attr_valid
        uint32_t entry_valid_nsec, attr_valid_nsec
        fuse_attr attr
    struct fuse_attr_out:
        uint64_t attr_valid
        uint32_t attr_valid_nsec
        fuse_attr attr
    struct fuse_init_in:
        uint32_t major, minor, max_readahead, flags
    struct fuse_init_out:
        uint32_t major, minor, max_readahead, flags
        uint16_t max_background, congestion_threshold
        uint32_t max_write, time_gran
        uint16_t max_pages
    struct fuse_forget_in:
        uint64_t nlookup
    struct fuse_forget_one:
        uint64_t nodeid, nlookup
    struct fuse_batch_forget_in:
        uint32_t count
    struct fuse_getattr_in:
        uint32_t getattr_flags
        uint64_t fh
    struct fuse_setattr_in:
        uint32_t valid
        uint64_t fh, size, atime, mtime
        uint32_t atimensec, mtimensec, mode, uid, gid
    struct fuse_mknod_in:
        uint32_t mode, rdev, umask
    struct fuse_mkdir_in:
        uint32_t mode, umask
    struct fuse_rename_in:
        uint64_t newdir
    struct fuse_rename2_in:
        uint64_t newdir
        uint32_t flags
    struct fuse_link_in:
        uint64_t oldnodeid
    struct fuse_open_in:
        uint32_t flags
    struct fuse_create_in:
        uint32_t flags, mode, umask
    struct fuse_open_out:
        uint64_t fh
        uint32_t open_flags
    struct fuse_release_in:
        uint64_t fh
    struct fuse_flush_in:
        uint64_t fh
    struct fuse_read_in:
        uint64_t fh, offset
        uint32_t size
    struct fuse_write_in:
        uint64_t fh, offset
        uint32_t size
    struct fuse_write_out:
        uint32_t size
    struct fuse_kstatfs:
        uint64_t blocks, bfree, bavail, files, ffree
        uint32_t bsize, namelen, frsize
    struct fuse_statfs_out:
        fuse_kstatfs st
    struct fuse_fsync_in:
        uint64_t fh
        uint32_t fsync_flags
    struct fuse_access_in:
        uint32_t mask
    struct fuse_fallocate_in:
        uint64_t fh, offset, length
        uint32_t mode
    struct fuse_dirent:
        uint64_t ino, off
        uint32_t namelen, type
    struct fuse_direntplus:
        fuse_entry_out entry_out
        fuse_dirent dirent
    struct fuse_lseek_in:
        uint64_t fh, offset
        uint32_t whence
    struct fuse_lseek_out:
        uint64_t offset
    struct fuse_copy_file_range_in:
        uint64_t fh_in, off_in, nodeid_out, fh_out, off_out, len, flags

cdef extern from "<fcntl.h>" nogil:
    int openat(int dirfd, const char *path, int flags, ...)
    int fallocate(int fd, int mode, off_t offset, off_t length)
    int fcntl(int fd, int cmd, ...)
    enum:
        F_GETFL, F_SETFL,
        O_PATH, O_NOFOLLOW, O_CLOEXEC, O_DIRECTORY, O_RDONLY, O_WRONLY, O_RDWR, O_ACCMODE, O_CREAT, O_EXCL,
        O_TRUNC, O_APPEND, O_NONBLOCK, O_SYNC, O_DSYNC, O_NOATIME, O_LARGEFILE
        AT_FDCWD, AT_EMPTY_PATH, AT_SYMLINK_NOFOLLOW, AT_REMOVEDIR, AT_SYMLINK_FOLLOW
        FALLOC_FL_KEEP_SIZE

cdef extern from "<stdio.h>" nogil:
    int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, unsigned int flags)
    int snprintf(char *buf, size_t size, const char *fmt, ...)
    enum: RENAME_NOREPLACE, RENAME_EXCHANGE

cdef extern from "<sys/stat.h>" nogil:
    int fstatat(int dirfd, const char *path, struct_stat *st, int flags)
    int fstat(int fd, struct_stat *st)
    int mkdirat(int dirfd, const char *path, mode_t mode)
    int mknodat(int dirfd, const char *path, mode_t mode, dev_t dev)
    int fchmod(int fd, mode_t mode)
    int fchmodat(int dirfd, const char *path, mode_t mode, int flags)
    int utimensat(int dirfd, const char *path, const timespec *times, int flags)
    enum: S_IFMT, S_IFREG, S_IFDIR, S_IFLNK, S_IFIFO
    enum: UTIME_NOW, UTIME_OMIT

cdef extern from "<sys/statvfs.h>" nogil:
    struct statvfs:
        unsigned long f_bsize, f_frsize, f_namemax
        unsigned long long f_blocks, f_bfree, f_bavail, f_files, f_ffree
    int fstatvfs(int fd, statvfs *buf)

cdef extern from "<dirent.h>" nogil:
    ssize_t getdents64(int fd, void *buf, size_t nbytes)
    struct dirent64:
        uint64_t d_ino
        int64_t d_off
        unsigned short d_reclen
        unsigned char d_type
        char d_name[256]

cdef extern from "<unistd.h>" nogil:
    int close(int fd)
    ssize_t pread(int fd, void *buf, size_t n, off_t off)
    ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
    ssize_t read(int fd, void *buf, size_t n)
    ssize_t write(int fd, const void *buf, size_t n)
    int ftruncate(int fd, off_t length)
    int fsync(int fd)
    int fdatasync(int fd)
    off_t lseek(int fd, off_t off, int whence)
    int unlinkat(int dirfd, const char *path, int flags)
    int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)
    int symlinkat(const char *target, int newdirfd, const char *linkpath)
    ssize_t readlinkat(int dirfd, const char *path, char *buf, size_t bufsiz)
    int fchownat(int dirfd, const char *path, uid_t owner, gid_t group, int flags)
    int faccessat(int dirfd, const char *path, int mode, int flags)
    ssize_t copy_file_range(int fd_in, off_t *off_in, int fd_out, off_t *off_out, size_t len, unsigned int flags)
    enum: W_OK, SEEK_SET
