/* PID 1 duties: the early mounts, the root (read-only lower + tmpfs upper under overlayfs), the mount plan, the
 * restricted profile, hostname/env/workdir, and power off. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"

int agent_is_init;
int agent_booted;

enum { SRC_VIRTIOFS = 1, SRC_TMPFS = 2, SRC_BLOCK_SERIAL = 3, SRC_BLOCK_PATH = 4, SRC_BIND = 5 };
enum { F_RDONLY = 1, F_NOEXEC = 2, F_NOSUID = 4, F_NODEV = 8 };

static void try_mount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data) {
    mkdir(dst, 0755);
    if (mount(src, dst, type, flags, data) < 0 && errno != EBUSY)
        agent_log("mount %s on %s: %s", type, dst, strerror(errno));
}

void init_early(void) {
    try_mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"); /* staging for the root switch */
    try_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    try_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    try_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
    try_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666");
    try_mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    try_mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    if (symlink("/proc/self/fd", "/dev/fd") < 0 && errno != EEXIST)
        agent_log("symlink /dev/fd: %s", strerror(errno));
    int fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0) { /* the kernel gives PID 1 no stdio when the initramfs lacks /dev/console */
        for (int i = 0; i < 3; i++)
            if (fcntl(i, F_GETFD) < 0)
                dup2(fd, i);
        close(fd);
    }
}

/* /dev/NAME of the block device whose virtio serial is `serial` */
static int find_block_by_serial(const char *serial, char *out, size_t outlen) {
    DIR *d = opendir("/sys/block");
    if (!d)
        return -1;
    struct dirent *de;
    int found = -1;
    while (found && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[300], got[256];
        snprintf(path, sizeof(path), "/sys/block/%s/serial", de->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, got, sizeof(got) - 1);
        close(fd);
        if (n <= 0)
            continue;
        got[n] = 0;
        got[strcspn(got, "\n")] = 0;
        if (strcmp(got, serial) == 0) {
            snprintf(out, outlen, "/dev/%s", de->d_name);
            found = 0;
        }
    }
    closedir(d);
    if (found)
        errno = ENODEV;
    return found;
}

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

struct mount_spec {
    int64_t kind, flags, size_mib, mode;
    char *source, *target, *fstype;
    int source_fd; /* bind: the source opened before the root switch hid it (-1: use `source`) */
};

static void spec_free(struct mount_spec *m) {
    free(m->source);
    free(m->target);
    free(m->fstype);
}

static int parse_spec(const struct field *outer, struct mount_spec *m) {
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
    if (bad || it.malformed || m->kind < SRC_VIRTIOFS || m->kind > SRC_BIND ||
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

/* Mount one spec on `target` (already prefixed); err gets a message on failure. */
static int mount_spec_at(struct mount_spec *m, const char *target, unsigned long extra, int restricted, char *err,
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
            if (find_block_by_serial(m->source, dev, sizeof(dev)) < 0) {
                snprintf(err, errlen, "no block device with serial %s", m->source);
                return -1;
            }
            src = dev;
        }
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
        /* a remount must keep the flags locked on the source (user namespaces): add them back */
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
    }
    if (mount(src, target, type, flags, opts) < 0) {
        snprintf(err, errlen, "mount %s (%s) on %s: %s", src, type, target, strerror(errno));
        return -1;
    }
    return 0;
}

/* Switch the root to `newroot`: pivot_root where the old root allows it (a namespace), else the initramfs way
 * (rootfs cannot be pivoted away: move the new root over / and chroot). */
static int switch_root(const char *newroot, char *err, size_t errlen) {
    const char *moves[] = {"dev", "proc", "sys", "tmp"};
    char to[300];
    for (size_t i = 0; i < sizeof(moves) / sizeof(moves[0]); i++) {
        snprintf(to, sizeof(to), "%s/%s", newroot, moves[i]);
        mkdir(to, 0755);
        char from[32];
        snprintf(from, sizeof(from), "/%s", moves[i]);
        /* a mount inherited from a parent namespace is locked and cannot move: bind it instead */
        if (mount(from, to, NULL, MS_MOVE, NULL) < 0 && mount(from, to, NULL, MS_BIND | MS_REC, NULL) < 0)
            agent_log("move %s: %s", from, strerror(errno));
    }
    if (chdir(newroot) < 0) {
        snprintf(err, errlen, "chdir %s: %s", newroot, strerror(errno));
        return -1;
    }
    if (syscall(SYS_pivot_root, ".", ".") == 0) {
        /* the old root is now stacked over the new one: it must go, or we would keep seeing it */
        if (umount2(".", MNT_DETACH) < 0) {
            snprintf(err, errlen, "detaching the old root: %s", strerror(errno));
            return -1;
        }
    } else if (mount(".", "/", NULL, MS_MOVE, NULL) < 0 || chroot(".") < 0) {
        snprintf(err, errlen, "switch root to %s: %s", newroot, strerror(errno));
        return -1;
    }
    return chdir("/");
}

static int setup_root(struct mount_spec *root, int restricted, char *err, size_t errlen) {
    mkdir("/run", 0755);
    mkdir("/run/msb", 0755);
    const char *lower = "/run/msb/lower", *rw = "/run/msb/rw", *newroot = "/run/msb/root";
    if (mount_spec_at(root, lower, MS_RDONLY, 0, err, errlen) < 0)
        return -1;
    struct mount_spec upper = {.kind = SRC_TMPFS, .mode = 0755};
    if (mount_spec_at(&upper, rw, 0, 0, err, errlen) < 0)
        return -1;
    mkdir("/run/msb/rw/upper", 0755);
    mkdir("/run/msb/rw/work", 0755);
    mkdir(newroot, 0755);
    unsigned long flags = restricted ? MS_NOSUID | MS_NODEV : 0;
    if (mount("overlay", newroot, "overlay", flags,
              "lowerdir=/run/msb/lower,upperdir=/run/msb/rw/upper,workdir=/run/msb/rw/work") < 0) {
        snprintf(err, errlen, "overlay root: %s", strerror(errno));
        return -1;
    }
    return switch_root(newroot, err, errlen);
}

static int drop_sys_admin(void) {
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    if (prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0) < 0 && errno != EINVAL)
        return -1;
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_LOWER, CAP_SYS_ADMIN, 0, 0);
    if (syscall(SYS_capget, &h, d) < 0)
        return -1;
    unsigned bit = 1u << (CAP_SYS_ADMIN % 32);
    int w = CAP_SYS_ADMIN / 32;
    d[w].effective &= ~bit;
    d[w].permitted &= ~bit;
    d[w].inheritable &= ~bit;
    return (int)syscall(SYS_capset, &h, d);
}

int init_apply_boot(const uint8_t *p, size_t n, char *err, size_t errlen) {
    struct field_iter it;
    struct field f;
    int64_t restricted = 0;
    char *hostname = NULL, *cwd = NULL;
    char **env = NULL;
    int envc = 0, has_root = 0, n_mounts = 0, rc = -1, n_open = 0;
    int *bind_fds = NULL;
    struct mount_spec root = {0};
    errno = 0;
    fields_begin(&it, p, n);
    while (fields_next(&it, &f)) {
        if (f.tag == T_RESTRICTED && field_int(&f, &restricted))
            goto bad;
        if (f.tag == T_HOSTNAME && (free(hostname), !(hostname = field_str(&f))))
            goto bad;
        if (f.tag == T_CWD && (free(cwd), !(cwd = field_str(&f))))
            goto bad;
        if (f.tag == T_ENV) {
            char *s = field_str(&f);
            if (!s || !strchr(s, '=')) {
                free(s);
                goto bad;
            }
            env = realloc(env, sizeof(char *) * (size_t)(envc + 2));
            env[envc++] = s;
            env[envc] = NULL;
        }
        if (f.tag == T_ROOT) {
            spec_free(&root);
            if (parse_spec(&f, &root) < 0)
                goto bad;
            has_root = 1;
        }
        if (f.tag == T_MOUNT) {
            struct mount_spec m;
            int ok = parse_spec(&f, &m) == 0 && m.target && m.target[0] == '/';
            spec_free(&m);
            if (!ok)
                goto bad;
            n_mounts++;
        }
    }
    if (it.malformed)
        goto bad;
    if (!agent_is_init && (has_root || n_mounts || hostname)) {
        errno = EPERM;
        snprintf(err, errlen, "root, mounts and hostname need the agent to run as PID 1");
        goto out;
    }
    /* bind sources are paths of the old root: clone them as detached trees before the root switch hides them */
    bind_fds = calloc((size_t)n_mounts + 1, sizeof(int));
    int k = 0;
    fields_begin(&it, p, n);
    while (bind_fds && fields_next(&it, &f)) {
        if (f.tag != T_MOUNT)
            continue;
        struct mount_spec m;
        parse_spec(&f, &m);
        bind_fds[k] = -1;
        if (m.kind == SRC_BIND &&
            (bind_fds[k] = open_tree(AT_FDCWD, m.source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)) < 0) {
            snprintf(err, errlen, "bind source %s: %s", m.source, strerror(errno));
            spec_free(&m);
            n_open = k;
            goto out;
        }
        spec_free(&m);
        n_open = ++k;
    }
    if (has_root && setup_root(&root, (int)restricted, err, errlen) < 0)
        goto out;
    k = 0;
    fields_begin(&it, p, n);
    while (fields_next(&it, &f)) {
        if (f.tag != T_MOUNT)
            continue;
        struct mount_spec m;
        parse_spec(&f, &m);
        m.source_fd = bind_fds ? bind_fds[k++] : -1;
        int r = mount_spec_at(&m, m.target, 0, (int)restricted, err, errlen);
        spec_free(&m);
        if (r < 0)
            goto out;
    }
    if (hostname && sethostname(hostname, strlen(hostname)) < 0) {
        snprintf(err, errlen, "sethostname: %s", strerror(errno));
        goto out;
    }
    if (restricted) {
        exec_no_new_privs = 1;
        if (agent_is_init && drop_sys_admin() < 0) {
            snprintf(err, errlen, "dropping CAP_SYS_ADMIN: %s", strerror(errno));
            goto out;
        }
    }
    if (env) {
        exec_base_env = env;
        env = NULL;
    }
    if (cwd) {
        exec_default_cwd = cwd;
        cwd = NULL;
    }
    agent_booted = 1;
    rc = 0;
    errno = 0;
    goto out;
bad:
    errno = EINVAL;
    snprintf(err, errlen, "malformed boot config field");
out:
    for (int i = 0; bind_fds && i < n_open; i++)
        if (bind_fds[i] >= 0)
            close(bind_fds[i]);
    free(bind_fds);
    spec_free(&root);
    free(hostname);
    free(cwd);
    for (int i = 0; env && i < envc; i++)
        free(env[i]);
    free(env);
    return rc;
}

void init_apply_boot_file(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    struct buf b = {0};
    uint8_t tmp[4096];
    ssize_t r;
    while ((r = read(fd, tmp, sizeof(tmp))) > 0 && b.len <= MAX_PAYLOAD)
        buf_append(&b, tmp, (size_t)r);
    close(fd);
    char err[256] = "";
    if (b.len > MAX_PAYLOAD || fields_validate(buf_ptr(&b), b.len))
        agent_log("boot config %s is malformed: ignored", path);
    else if (init_apply_boot(buf_ptr(&b), b.len, err, sizeof(err)) < 0)
        agent_log("boot config %s: %s", path, err);
    buf_free(&b);
}

void init_poweroff(void) {
    if (getpid() != 1)
        _exit(0); /* never signal everyone or reboot from anything but PID 1 */
    kill(-1, SIGTERM);
    for (int i = 0; i < 20 && waitpid(-1, NULL, WNOHANG) >= 0; i++)
        usleep(10000);
    kill(-1, SIGKILL);
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    sync();
    agent_log("powering off");
    /* RB_POWER_OFF needs a way to power off (ACPI); without one the kernel would only halt, so reboot instead:
     * VMMs (ours, Firecracker, libkrun; QEMU with -no-reboot) end the VM on a guest reset. */
    if (access("/sys/firmware/acpi", F_OK) == 0)
        reboot(RB_POWER_OFF);
    reboot(RB_AUTOBOOT);
    _exit(0); /* not PID 1 of a VM (a pid namespace): exiting ends it */
}
