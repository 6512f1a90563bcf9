/* PID 1 duties: the early mounts, the root (read-only lower + tmpfs upper under overlayfs), the mount plan, the
 * restricted profile, hostname/env/workdir, and power off. */
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/random.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/reboot.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mounts.h"

int agent_is_init;
int agent_booted;
char agent_boot_error[300];

static void try_mount(const char *src, const char *dst, const char *type, unsigned long flags, const char *data) {
    mkdir(dst, 0755);
    if (mount(src, dst, type, flags, data) < 0 && errno != EBUSY)
        agent_log("mount %s on %s: %s", type, dst, strerror(errno));
}

/* In a user namespace (the namespace backend) rather than a VM: uid 0 is not the whole identity map. There the
 * inherited /dev, /sys and /proc belong to the host and must not reach the sandbox as they are. */
static int in_user_namespace(void) {
    char buf[128] = "";
    int fd = open("/proc/self/uid_map", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    unsigned long inside, outside, count;
    if (n <= 0 || sscanf(buf, "%lu %lu %lu", &inside, &outside, &count) != 3)
        return 0;
    return !(inside == 0 && outside == 0 && count == 4294967295UL);
}

/* A new network namespace (and a VM) starts with lo down: "loopback only" means lo up. */
static void loopback_up(void) {
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) == 0 && !(ifr.ifr_flags & IFF_UP)) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            agent_log("lo up: %s", strerror(errno));
    }
    close(s);
}

/* /dev of a namespace sandbox: a small tmpfs with only the harmless host nodes bound in, and a devpts of its own
 * (devtmpfs cannot be mounted in a user namespace, and the host's /dev must not show through). */
static int build_namespace_dev(const char *newroot, char *err, size_t errlen) {
    static const char *nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
    static const char *links[][2] = {{"fd", "/proc/self/fd"}, {"stdin", "/proc/self/fd/0"},
                                     {"stdout", "/proc/self/fd/1"}, {"stderr", "/proc/self/fd/2"},
                                     {"ptmx", "pts/ptmx"}};
    char dev[300], to[340], from[40];
    snprintf(dev, sizeof(dev), "%s/dev", newroot);
    mkdir(dev, 0755);
    if (mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=1m") < 0) {
        snprintf(err, errlen, "tmpfs on %s: %s", dev, strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < sizeof(nodes) / sizeof(nodes[0]); i++) {
        snprintf(to, sizeof(to), "%s/%s", dev, nodes[i]);
        snprintf(from, sizeof(from), "/dev/%s", nodes[i]);
        int fd = open(to, O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
        if (fd >= 0)
            close(fd);
        if (mount(from, to, NULL, MS_BIND, NULL) < 0)
            agent_log("bind %s: %s", from, strerror(errno));
    }
    for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++) {
        snprintf(to, sizeof(to), "%s/%s", dev, links[i][0]);
        if (symlink(links[i][1], to) < 0)
            agent_log("symlink %s: %s", to, strerror(errno));
    }
    snprintf(to, sizeof(to), "%s/pts", dev);
    mkdir(to, 0755);
    if (mount("devpts", to, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,mode=0620,ptmxmode=0666") < 0)
        agent_log("devpts: %s", strerror(errno));
    snprintf(to, sizeof(to), "%s/shm", dev);
    mkdir(to, 01777);
    if (mount("tmpfs", to, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0)
        agent_log("tmpfs on /dev/shm: %s", strerror(errno));
    return 0;
}

/* The host's kernel knobs, seen through /proc and /sys, stay read-only or hidden (as container runtimes do). */
static void harden_namespace_proc_sys(const char *newroot) {
    static const char *masked[] = {"proc/kcore", "proc/keys", "proc/timer_list", "proc/sysrq-trigger",
                                   "proc/sched_debug", "proc/kallsyms"};
    static const char *readonly[] = {"proc/sys", "proc/bus", "proc/fs", "proc/irq", "sys"};
    char path[340];
    for (size_t i = 0; i < sizeof(masked) / sizeof(masked[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", newroot, masked[i]);
        if (access(path, F_OK) == 0 && mount("/dev/null", path, NULL, MS_BIND, NULL) < 0)
            agent_log("mask %s: %s", path, strerror(errno));
    }
    for (size_t i = 0; i < sizeof(readonly) / sizeof(readonly[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", newroot, readonly[i]);
        if (access(path, F_OK) < 0)
            continue;
        struct statvfs sv;
        unsigned long keep = 0; /* flags locked on an inherited mount must be repeated in the remount */
        if (statvfs(path, &sv) == 0)
            keep = (sv.f_flag & ST_NOSUID ? MS_NOSUID : 0) | (sv.f_flag & ST_NODEV ? MS_NODEV : 0) |
                   (sv.f_flag & ST_NOEXEC ? MS_NOEXEC : 0);
        if ((strcmp(readonly[i], "sys") != 0 && mount(path, path, NULL, MS_BIND | MS_REC, NULL) < 0) ||
            mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | keep, NULL) < 0)
            agent_log("read-only %s: %s", path, strerror(errno));
    }
}

void init_early(void) {
    int userns = in_user_namespace();
    /* in a user namespace the host's paths stay in view until the root switch: bind sources (a home under /tmp
     * or /run) are read from them when the BOOT message comes; the new root gets its own /dev and /tmp then */
    if (!userns)
        try_mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755"); /* staging for the root switch */
    try_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    try_mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
    if (!userns) {
        try_mount("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
        try_mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "mode=0620,ptmxmode=0666");
        try_mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
        try_mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
        if (symlink("/proc/self/fd", "/dev/fd") < 0 && errno != EEXIST)
            agent_log("symlink /dev/fd: %s", strerror(errno));
    }
    loopback_up();
    int fd = open("/dev/console", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd >= 0) { /* the kernel gives PID 1 no stdio when the initramfs lacks /dev/console */
        for (int i = 0; i < 3; i++)
            if (fcntl(i, F_GETFD) < 0)
                dup2(fd, i);
        close(fd);
    }
}

/* Switch the root to `newroot`: pivot_root where the old root allows it (a namespace), else the initramfs way
 * (rootfs cannot be pivoted away: move the new root over / and chroot). */
static int switch_root(const char *newroot, char *err, size_t errlen) {
    const char *moves[] = {"dev", "proc", "sys", "tmp"};
    char to[300];
    int userns = in_user_namespace();
    if (userns && build_namespace_dev(newroot, err, errlen) < 0)
        return -1;
    if (userns) { /* the host's /tmp stays out: a fresh one */
        snprintf(to, sizeof(to), "%s/tmp", newroot);
        try_mount("tmpfs", to, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
    }
    for (size_t i = userns ? 1 : 0; i < sizeof(moves) / sizeof(moves[0]) - (size_t)userns; i++) {
        snprintf(to, sizeof(to), "%s/%s", newroot, moves[i]);
        mkdir(to, 0755);
        char from[32];
        snprintf(from, sizeof(from), "/%s", moves[i]);
        /* a mount inherited from a parent namespace is locked and cannot move: bind it instead */
        if (mount(from, to, NULL, MS_MOVE, NULL) < 0 && mount(from, to, NULL, MS_BIND | MS_REC, NULL) < 0)
            agent_log("move %s: %s", from, strerror(errno));
    }
    if (userns)
        harden_namespace_proc_sys(newroot);
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
    if (in_user_namespace()) { /* clone the root's source before the staging tmpfs may hide it (a home in /run) */
        if (root->kind == SRC_BIND && root->source_fd < 0 &&
            (root->source_fd = open_tree(AT_FDCWD, root->source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE)) < 0) {
            snprintf(err, errlen, "root %s: %s", root->source, strerror(errno));
            return -1;
        }
        try_mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
    }
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

#define ENTROPY_MAX 512

/* Credit the host's random bytes and reseed at once: a clone restored from a snapshot would otherwise draw the
   same "random" numbers as every other clone of it until the kernel's next scheduled reseed. */
static int seed_entropy(const uint8_t *p, uint32_t n) {
    struct {
        int entropy_count, buf_size;
        uint8_t buf[ENTROPY_MAX];
    } req = {.entropy_count = (int)n * 8, .buf_size = (int)n};
    memcpy(req.buf, p, n);
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = ioctl(fd, RNDADDENTROPY, &req);
#ifdef RNDRESEEDCRNG
    if (rc == 0)
        ioctl(fd, RNDRESEEDCRNG); /* Linux >= 4.17; newer kernels reseed on credit anyway */
#endif
    close(fd);
    return rc;
}

/* A restored clone wakes with the wall clock of the moment its template was taken: step it to the host's. */
static int step_clock(int64_t realtime_ns) {
    struct timespec ts = {.tv_sec = realtime_ns / 1000000000, .tv_nsec = realtime_ns % 1000000000};
    return clock_settime(CLOCK_REALTIME, &ts);
}

int init_apply_boot(const uint8_t *p, size_t n, char *err, size_t errlen) {
    struct field_iter it;
    struct field f;
    int64_t restricted = 0, realtime_ns = 0;
    const uint8_t *entropy = NULL;
    uint32_t entropy_len = 0;
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
        if (f.tag == T_ENTROPY) {
            if (f.len == 0 || f.len > ENTROPY_MAX)
                goto bad;
            entropy = f.val;
            entropy_len = f.len;
        }
        if (f.tag == T_REALTIME_NS && (field_int(&f, &realtime_ns) || realtime_ns <= 0))
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
    if (!agent_is_init && (has_root || n_mounts || hostname || entropy || realtime_ns)) {
        errno = EPERM;
        snprintf(err, errlen, "root, mounts, hostname, entropy and clock need the agent to run as PID 1");
        goto out;
    }
    /* first: everything after (mounts included) may draw random numbers or look at the time */
    if (entropy && seed_entropy(entropy, entropy_len) < 0) {
        snprintf(err, errlen, "seeding entropy: %s", strerror(errno));
        goto out;
    }
    if (realtime_ns && step_clock(realtime_ns) < 0) {
        snprintf(err, errlen, "setting the clock: %s", strerror(errno));
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
        if (spec_source_is_path(&m) &&
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
    /* in a user namespace CAP_SYS_ADMIN would let a command remount read-only binds of host files writable */
    if (restricted || (has_root && in_user_namespace())) {
        exec_no_new_privs = restricted ? 1 : exec_no_new_privs;
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
    if (has_root && root.source_fd >= 0)
        close(root.source_fd);
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
        snprintf(err, sizeof(err), "malformed: ignored");
    else
        init_apply_boot(buf_ptr(&b), b.len, err, sizeof(err));
    if (err[0]) { /* kept for HELLO replies: the host reports it rather than a bare "not booted" */
        snprintf(agent_boot_error, sizeof(agent_boot_error), "boot config %s: %s", path, err);
        agent_log("%s", agent_boot_error);
    }
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
