/* FS_* requests: read, write, list, stat, mkdir and remove files in the guest. */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"

struct fs_req {
    char *path;
    int64_t mode, parents, recursive, append;
};

/* Parse the common FS_* fields; on failure an ERROR was sent. */
static int parse_fs(uint32_t stream, const uint8_t *p, size_t n, struct fs_req *r, int64_t default_mode) {
    struct field_iter it;
    struct field f;
    memset(r, 0, sizeof(*r));
    r->mode = default_mode;
    fields_begin(&it, p, n);
    int bad = 0;
    while (!bad && fields_next(&it, &f)) {
        switch (f.tag) {
        case T_PATH: free(r->path); bad = !(r->path = field_str(&f)); break;
        case T_MODE: bad = field_int(&f, &r->mode) || r->mode < 0 || r->mode > 07777; break;
        case T_PARENTS: bad = field_int(&f, &r->parents); break;
        case T_RECURSIVE: bad = field_int(&f, &r->recursive); break;
        case T_APPEND: bad = field_int(&f, &r->append); break;
        default: break;
        }
    }
    if (bad || it.malformed || !r->path || !r->path[0]) {
        free(r->path);
        r->path = NULL;
        send_error(stream, E_MALFORMED, "request needs a PATH (a string without NUL) and valid options");
        return -1;
    }
    return 0;
}

static int kind_of(mode_t m) {
    if (S_ISREG(m))
        return 1;
    if (S_ISDIR(m))
        return 2;
    if (S_ISLNK(m))
        return 3;
    return 4;
}

static void stat_fields(struct payload *pl, const struct stat *st) {
    pl_int(pl, T_KIND, kind_of(st->st_mode));
    pl_int(pl, T_SIZE, st->st_size);
    pl_int(pl, T_MODE, st->st_mode & 07777);
    pl_int(pl, T_MTIME_NS, (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec);
}

int mkdir_parents(const char *path, mode_t mode) {
    char *copy = strdup(path);
    if (!copy)
        return -1;
    size_t len = strlen(copy);
    while (len > 1 && copy[len - 1] == '/')
        copy[--len] = 0;
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(copy, 0755) < 0 && errno != EEXIST) {
            free(copy);
            return -1;
        }
        *p = '/';
    }
    int rc = mkdir(copy, mode);
    if (rc < 0 && errno == EEXIST) {
        struct stat st;
        rc = stat(copy, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
        if (rc)
            errno = EEXIST;
    }
    free(copy);
    return rc;
}

void fs_read_start(uint32_t stream, const uint8_t *p, size_t n) {
    struct fs_req r;
    if (parse_fs(stream, p, n, &r, 0))
        return;
    struct stat st;
    /* regular files only (/proc files are regular): a device like /dev/zero would stream forever, and opening a
       FIFO or a device has effects of its own, so the type is checked before the open too */
    int fd = stat(r.path, &st) == 0 && !S_ISREG(st.st_mode) ? -2 : open(r.path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd == -2) {
        send_error(stream, S_ISDIR(st.st_mode) ? EISDIR : EINVAL, "cannot read %s: %s", r.path,
                   S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file (a FIFO, socket or device: use exec)");
        free(r.path);
        return;
    }
    if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        int e = fd < 0 ? errno : (S_ISDIR(st.st_mode) ? EISDIR : S_ISREG(st.st_mode) ? errno : EINVAL);
        if (fd >= 0)
            close(fd);
        send_error(stream, e, "cannot read %s: %s", r.path, strerror(e));
        free(r.path);
        return;
    }
    free(r.path);
    struct stream *s = stream_new(stream, S_READ);
    if (!s) {
        close(fd);
        send_error(stream, EMFILE, "too many live streams");
        return;
    }
    s->file_fd = fd;
}

void fs_read_pump(struct stream *s) {
    uint8_t tmp[CHUNK_SIZE];
    for (int rounds = 0; rounds < 16 && out_pending() < OUT_HIGH_WATER; rounds++) {
        ssize_t r = read(s->file_fd, tmp, sizeof(tmp));
        if (r > 0) {
            send_frame(MSG_DATA, s->id, tmp, (size_t)r);
            s->file_bytes += r;
            continue;
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return; /* a pipe or device: try again next round */
        if (r < 0) {
            send_error(s->id, errno, "read failed: %s", strerror(errno));
        } else {
            struct payload pl = {0};
            pl_int(&pl, T_SIZE, s->file_bytes);
            send_frame(MSG_DATA_END, s->id, buf_ptr(&pl.b), pl.b.len);
            buf_free(&pl.b);
        }
        stream_free(s);
        return;
    }
}

void fs_write_start(uint32_t stream, const uint8_t *p, size_t n) {
    struct fs_req r;
    if (parse_fs(stream, p, n, &r, 0644))
        return;
    if (r.parents) {
        char *slash = strrchr(r.path, '/');
        if (slash && slash != r.path) {
            *slash = 0;
            int rc = mkdir_parents(r.path, 0755);
            *slash = '/';
            if (rc < 0) {
                send_error(stream, errno, "cannot create parents of %s: %s", r.path, strerror(errno));
                free(r.path);
                return;
            }
        }
    }
    /* Only regular files: a FIFO the guest swapped in would block this (single-threaded) agent in open or write,
       a device could do anything on open. Checked before opening; O_NONBLOCK covers a swap after the check. */
    struct stat st;
    if (stat(r.path, &st) == 0 && !S_ISREG(st.st_mode)) {
        send_error(stream, S_ISDIR(st.st_mode) ? EISDIR : EINVAL, "cannot write %s: %s", r.path,
                   S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file (a FIFO, socket or device: use exec)");
        free(r.path);
        return;
    }
    int flags = O_WRONLY | O_CREAT | O_CLOEXEC | O_NONBLOCK | (r.append ? O_APPEND : O_TRUNC);
    int fd = open(r.path, flags, (mode_t)r.mode);
    if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
        close(fd);
        fd = -1;
        errno = EINVAL;
    }
    if (fd < 0) {
        send_error(stream, errno, "cannot write %s: %s", r.path, strerror(errno));
        free(r.path);
        return;
    }
    free(r.path);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    struct stream *s = stream_new(stream, S_WRITE);
    if (!s) {
        close(fd);
        send_error(stream, EMFILE, "too many live streams");
        return;
    }
    s->file_fd = fd;
}

void fs_write_data(struct stream *s, const uint8_t *p, size_t n) {
    while (n && !s->failed_errno) {
        ssize_t w = write(s->file_fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            s->failed_errno = errno;
            break;
        }
        p += w;
        n -= (size_t)w;
        s->file_bytes += w;
    }
}

void fs_write_end(struct stream *s) {
    int e = s->failed_errno;
    if (close(s->file_fd) < 0 && !e)
        e = errno;
    s->file_fd = -1;
    if (e) {
        send_error(s->id, e, "write failed: %s", strerror(e));
    } else {
        struct payload pl = {0};
        pl_int(&pl, T_SIZE, s->file_bytes);
        send_ok(s->id, &pl);
    }
    stream_free(s);
}

void fs_list(uint32_t stream, const uint8_t *p, size_t n) {
    struct fs_req r;
    if (parse_fs(stream, p, n, &r, 0))
        return;
    DIR *d = opendir(r.path);
    if (!d) {
        send_error(stream, errno, "cannot list %s: %s", r.path, strerror(errno));
        free(r.path);
        return;
    }
    struct payload batch = {0};
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        struct stat st;
        if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue; /* removed while we listed */
        struct payload entry = {0};
        pl_str(&entry, T_NAME, de->d_name);
        stat_fields(&entry, &st);
        pl_bytes(&batch, T_ENTRY, buf_ptr(&entry.b), entry.b.len);
        buf_free(&entry.b);
        if (batch.b.len > 256 * 1024) {
            send_frame(MSG_LIST, stream, buf_ptr(&batch.b), batch.b.len);
            buf_consume(&batch.b, batch.b.len);
        }
    }
    closedir(d);
    if (batch.b.len)
        send_frame(MSG_LIST, stream, buf_ptr(&batch.b), batch.b.len);
    buf_free(&batch.b);
    send_ok(stream, NULL);
    free(r.path);
}

void fs_stat(uint32_t stream, const uint8_t *p, size_t n) {
    struct fs_req r;
    if (parse_fs(stream, p, n, &r, 0))
        return;
    struct stat st;
    if (lstat(r.path, &st) < 0) {
        send_error(stream, errno, "cannot stat %s: %s", r.path, strerror(errno));
    } else {
        struct payload pl = {0};
        stat_fields(&pl, &st);
        send_ok(stream, &pl);
    }
    free(r.path);
}

void fs_mkdir(uint32_t stream, const uint8_t *p, size_t n) {
    struct fs_req r;
    if (parse_fs(stream, p, n, &r, 0755))
        return;
    int rc = r.parents ? mkdir_parents(r.path, (mode_t)r.mode) : mkdir(r.path, (mode_t)r.mode);
    if (rc < 0)
        send_error(stream, errno, "cannot create directory %s: %s", r.path, strerror(errno));
    else
        send_ok(stream, NULL);
    free(r.path);
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st;
    (void)ftw;
    return (type == FTW_DP ? rmdir(path) : unlink(path)) < 0 ? -1 : 0;
}

void fs_remove(uint32_t stream, const uint8_t *p, size_t n) {
    struct fs_req r;
    if (parse_fs(stream, p, n, &r, 0))
        return;
    struct stat st;
    int rc;
    if (lstat(r.path, &st) < 0)
        rc = -1;
    else if (!S_ISDIR(st.st_mode))
        rc = unlink(r.path);
    else if (r.recursive)
        rc = nftw(r.path, remove_one, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
    else
        rc = rmdir(r.path);
    if (rc < 0)
        send_error(stream, errno, "cannot remove %s: %s", r.path, strerror(errno));
    else
        send_ok(stream, NULL);
    free(r.path);
}
