/* msb-agent: the guest's PID 1 (or a plain process in the native tests and the namespace backend) serving the
 * agent protocol over one fd. See _vmcore/guest/PROTOCOL.md. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"

static int open_port(const char *spec) {
    char path[300];
    const char *name = strncmp(spec, "name:", 5) == 0 ? spec + 5 : NULL;
    /* devices can show up a little after PID 1 starts: wait up to 10 s */
    for (int i = 0; i < 200; i++) {
        if (name ? find_dev_by_attr("/sys/class/virtio-ports", "name", name, path, sizeof(path)) == 0 : snprintf(path, sizeof(path), "%s", spec) > 0) {
            int fd = open(path, O_RDWR | O_NOCTTY | O_CLOEXEC);
            struct termios tio;
            if (fd >= 0 && tcgetattr(fd, &tio) == 0) { /* a console (hvc) is a tty: no echo, no line editing */
                cfmakeraw(&tio);
                tcsetattr(fd, TCSANOW, &tio);
                tcflush(fd, TCIOFLUSH); /* input that arrived before raw mode was mangled (and echoed): drop it */
            }
            if (fd >= 0)
                return fd;
        }
        usleep(50000);
    }
    agent_log("agent port %s not found", spec);
    return -1;
}

static void usage(void) {
    agent_log("usage: agent [--boot-config FILE] (--fd N | --port PATH | --port-name NAME)");
}

int main(int argc, char **argv) {
    const char *port = NULL, *boot_file = NULL;
    int fd = -1;
    /* PID 1 duties (mounts, power off) only ever as PID 1: of a VM, or of a pid namespace */
    agent_is_init = getpid() == 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--fd") && v) {
            fd = atoi(v);
            i++;
        } else if (!strcmp(a, "--port") && v) {
            port = v;
            i++;
        } else if (!strcmp(a, "--port-name") && v) {
            static char spec[300];
            snprintf(spec, sizeof(spec), "name:%s", v);
            port = spec;
            i++;
        } else if (!strcmp(a, "--boot-config") && v) {
            boot_file = v;
            i++;
        } else if (!agent_is_init) { /* as PID 1, the kernel passes stray cmdline words: ignore them */
            usage();
            return 2;
        }
    }
    if (fd < 0 && !port) {
        const char *e = getenv("MSB_AGENT_FD");
        if (e && *e)
            fd = atoi(e);
        else
            port = getenv("MSB_AGENT_PORT");
    }
    if (agent_is_init)
        init_early(); /* mounts /dev and puts the console on any of fds 0-2 that is missing */
    for (int i = 0; i < 3; i++) /* keep 0-2 taken, so pipes never land there and get clobbered in a child */
        if (fcntl(i, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0)
            break;
    if (agent_is_init) {
        init_apply_boot_file(boot_file ? boot_file : "/boot.msb");
    } else {
        prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); /* orphans of our commands are ours to reap */
        if (boot_file)
            init_apply_boot_file(boot_file);
    }
    if (fd < 0 && port) {
        fd = open_port(port);
        serve_set_port(1);
    }
    if (fd < 0) {
        if (!port)
            usage();
        if (agent_is_init)
            init_poweroff();
        return 2;
    }
    unsetenv("MSB_AGENT_FD");
    unsetenv("MSB_AGENT_PORT");
    int rc = serve(fd);
    if (agent_is_init)
        init_poweroff();
    return rc;
}
