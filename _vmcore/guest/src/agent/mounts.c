/* Mount one boot-config spec: find block devices by virtio serial, detect filesystems, apply real mount flags. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "mounts.h"

#define BLOCK_WAIT_MS 5000

/* Filesystem type from the superblock magic; NULL when unknown. */
static const char *detect_fstype(const char *dev) {
    uint8_t sb[4096];
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    ssize_t n = pread(fd, sb, sizeof(sb), 0);
    close(fd);
    if (n < 2048)
        return NULL;
    if (sb[1024 + 56] == 0x53 && sb[1024 + 57] == 0xEF)
        return "ext4"; /* ext2/3/4 all mount as ext4 */
    if (sb[1024] == 0xE2 && sb[1025] == 0xE1 && sb[1026] == 0xF5 && sb[1027] == 0xE0)
        return "erofs";
    if (memcmp(sb, "hsqs", 4) == 0)
        return "squashfs";
    if (memcmp(sb, "XFSB", 4) == 0)
        return "xfs";
    return NULL;
}

void spec_free(struct mount_spec *m) {
    free(m->source);
    free(m->target);
    free(m->fstype);
}

static int overlay_over_share(const struct mount_spec *m) {
    return m->kind == SRC_OVERLAY && m->fstype && strcmp(m->fstype, "virtiofs") == 0;
}

int spec_source_is_path(const struct mount_spec *m) {
    return m->kind == SRC_BIND || (m->kind == SRC_OVERLAY && !overlay_over_share(m));
}

int parse_spec(const struct field *outer, struct mount_spec *m) {
    struct field_iter it;
    struct field f;
    memset(m, 0, sizeof(*m));
    m->mode = -1;
    m->source_fd = -1;
    fields_begin(&it, outer->val, outer->len);
    int bad = 0;
    while (!bad && fields_next(&it, &f)) {
        switch (f.tag) {
        case T_SOURCE_KIND: bad = field_int(&f, &m->kind); break;
        case T_SOURCE: free(m->source); bad = !(m->source = field_str(&f)); break;
        case T_TARGET: free(m->target); bad = !(m->target = field_str(&f)); break;
        case T_FSTYPE: free(m->fstype); bad = !(m->fstype = field_str(&f)); break;
        case T_FLAGS: bad = field_int(&f, &m->flags); break;
        case T_SIZE_MIB: bad = field_int(&f, &m->size_mib) || m->size_mib < 0; break;
        case T_MODE: bad = field_int(&f, &m->mode) || m->mode > 07777; break;
        default: break;
        }
    }
    if (bad || it.malformed || m->kind < SRC_VIRTIOFS || m->kind > SRC_OVERLAY ||
        (m->kind != SRC_TMPFS && !m->source)) {
        errno = EINVAL;
        return -1;
    }
    return 0;
}

static unsigned long mount_flags(int64_t flags, int restricted) {
    unsigned long f = 0;
    if (flags & F_RDONLY)
        f |= MS_RDONLY;
    if (flags & F_NOEXEC)
        f |= MS_NOEXEC;
    if ((flags & F_NOSUID) || restricted)
        f |= MS_NOSUID;
    if ((flags & F_NODEV) || restricted)
        f |= MS_NODEV;
    return f;
}

/* The MOUNT_ATTR_* bits of the MS_* flags mount_setattr understands. */
static uint64_t mount_attrs(unsigned long flags) {
    return (flags & MS_RDONLY ? MOUNT_ATTR_RDONLY : 0) | (flags & MS_NOSUID ? MOUNT_ATTR_NOSUID : 0) |
           (flags & MS_NODEV ? MOUNT_ATTR_NODEV : 0) | (flags & MS_NOEXEC ? MOUNT_ATTR_NOEXEC : 0);
}

/* A private writable layer over `m->source`: the source is attached read-only under a tmpfs that also holds the
 * overlay's upper and work directories, so writes in the guest land in memory and never reach the source. The
 * source is a path to bind (namespace sandboxes), or with fstype "virtiofs" the tag of a virtio-fs share (a VM). */
static int mount_overlay(struct mount_spec *m, const char *target, unsigned long flags, char *err, size_t errlen) {
    static int layers;
    char base[64], lower[80], upper[80], work[80], opts[300];
    snprintf(base, sizeof(base), "/run/msb/overlay%d", layers++);
    snprintf(lower, sizeof(lower), "%s/lower", base);
    snprintf(upper, sizeof(upper), "%s/upper", base);
    snprintf(work, sizeof(work), "%s/work", base);
    if (mkdir_parents(base, 0700) < 0 || mount("tmpfs", base, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700") < 0 ||
        mkdir(lower, 0755) < 0 || mkdir(upper, 0755) < 0 || mkdir(work, 0755) < 0) {
        snprintf(err, errlen, "overlay layer %s: %s", base, strerror(errno));
        return -1;
    }
    struct mount_spec below = *m;
    below.kind = overlay_over_share(m) ? SRC_VIRTIOFS : SRC_BIND;
    below.fstype = NULL;
    below.flags = 1; /* readonly */
    if (mount_spec_at(&below, lower, 0, 0, err, errlen) < 0)
        return -1;
    snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work);
    if (mount("overlay", target, "overlay", flags, opts) < 0) {
        snprintf(err, errlen, "overlay of %s on %s: %s", m->source, target, strerror(errno));
        return -1;
    }
    return 0;
}

/* A disk mounted read-only is made read-only in the guest's block layer too, so nothing writes to it (a journal
   replay included) whatever the device advertised: a snapshot template's disk slots all advertise writable. */
static void block_set_readonly(const char *dev) {
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    int one = 1;
    ioctl(fd, BLKROSET, &one);
    close(fd);
}

/* Mount one spec on `target` (already prefixed); err gets a message on failure. */
int mount_spec_at(struct mount_spec *m, const char *target, unsigned long extra, int restricted, char *err,
                         size_t errlen) {
    unsigned long flags = mount_flags(m->flags, restricted) | extra;
    char dev[300], data[128];
    const char *type = NULL, *src = m->source;
    const char *opts = NULL;
    if (mkdir_parents(target, 0755) < 0) {
        snprintf(err, errlen, "mkdir %s: %s", target, strerror(errno));
        return -1;
    }
    switch (m->kind) {
    case SRC_VIRTIOFS:
        type = "virtiofs";
        break;
    case SRC_TMPFS:
        src = "tmpfs";
        type = "tmpfs";
        snprintf(data, sizeof(data), "mode=0%llo", (unsigned long long)(m->mode >= 0 ? m->mode : 01777));
        if (m->size_mib > 0)
            snprintf(data + strlen(data), sizeof(data) - strlen(data), ",size=%lldm", (long long)m->size_mib);
        opts = data;
        break;
    case SRC_BLOCK_SERIAL:
    case SRC_BLOCK_PATH:
        if (m->kind == SRC_BLOCK_SERIAL) {
            if (wait_block_by_serial(m->source, dev, sizeof(dev), BLOCK_WAIT_MS) < 0) {
                snprintf(err, errlen, "no block device with serial %s and a capacity", m->source);
                return -1;
            }
            src = dev;
        }
        if (flags & MS_RDONLY)
            block_set_readonly(src);
        type = m->fstype ? m->fstype : detect_fstype(src);
        if (!type) {
            errno = EINVAL;
            snprintf(err, errlen, "unknown filesystem on %s", src);
            return -1;
        }
        break;
    case SRC_BIND: {
        struct statvfs sv;
        /* a tree cloned before the root switch (its source is out of view now), else the path itself */
        int rc = m->source_fd >= 0 ? move_mount(m->source_fd, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH)
                                   : mount(src, target, NULL, MS_BIND | MS_REC, NULL);
        if (rc < 0) {
            snprintf(err, errlen, "bind %s on %s: %s", src, target, strerror(errno));
            return -1;
        }
        /* every flag applies to the whole cloned subtree: a mount inside a read-only source must not be a way
           around it (a remount, below, would change the top mount only) */
        struct mount_attr attr = {.attr_set = mount_attrs(flags)};
        if (mount_setattr(AT_FDCWD, target, AT_RECURSIVE, &attr, sizeof(attr)) == 0)
            return 0;
        if (errno != ENOSYS) {
            snprintf(err, errlen, "set the flags of %s and the mounts below it: %s", target, strerror(errno));
            umount2(target, MNT_DETACH);
            return -1;
        }
        /* kernels before 5.12: the top mount only. A remount must keep the flags locked on the source (user
           namespaces): add them back */
        if (statvfs(target, &sv) == 0)
            flags |= (sv.f_flag & ST_RDONLY ? MS_RDONLY : 0) | (sv.f_flag & ST_NOSUID ? MS_NOSUID : 0) |
                     (sv.f_flag & ST_NODEV ? MS_NODEV : 0) | (sv.f_flag & ST_NOEXEC ? MS_NOEXEC : 0);
        if (mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | flags, NULL) < 0) {
            snprintf(err, errlen, "remount %s with its flags: %s", target, strerror(errno));
            umount2(target, MNT_DETACH);
            return -1;
        }
        return 0;
    }
    case SRC_OVERLAY:
        return mount_overlay(m, target, flags, err, errlen);
    }
    if (mount(src, target, type, flags, opts) < 0) {
        snprintf(err, errlen, "mount %s (%s) on %s: %s", src, type, target, strerror(errno));
        return -1;
    }
    return 0;
}

