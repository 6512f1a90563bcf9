/* Device lookup through sysfs (there is no udev in our guest to make /dev/disk/by-* or /dev/virtio-ports links). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"

int find_dev_by_attr(const char *class_dir, const char *attr, const char *value, char *out, size_t outlen) {
    DIR *d = opendir(class_dir);
    if (!d)
        return -1;
    struct dirent *de;
    int found = -1;
    while (found && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[300], got[256];
        snprintf(path, sizeof(path), "%s/%s/%s", class_dir, de->d_name, attr);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t n = read(fd, got, sizeof(got) - 1);
        close(fd);
        if (n <= 0)
            continue;
        got[n] = 0;
        got[strcspn(got, "\n")] = 0;
        if (strcmp(got, value) == 0) {
            snprintf(out, outlen, "/dev/%s", de->d_name);
            found = 0;
        }
    }
    closedir(d);
    if (found)
        errno = ENODEV;
    return found;
}

static int block_has_capacity(const char *name) {
    char path[300], got[32];
    snprintf(path, sizeof(path), "/sys/block/%s/size", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, got, sizeof(got) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    got[n] = 0;
    return strtoull(got, NULL, 10) > 0;
}

/* A disk slot bound after a snapshot restore answers with its serial at once but gets its size a moment later
   (the driver handles the configuration interrupt in a workqueue): wait for both, up to timeout_ms. */
int wait_block_by_serial(const char *serial, char *out, size_t outlen, int timeout_ms) {
    for (int waited = 0;; waited += 10) {
        if (find_dev_by_attr("/sys/block", "serial", serial, out, outlen) == 0 && block_has_capacity(out + 5))
            return 0;
        if (waited >= timeout_ms) {
            errno = ENODEV;
            return -1;
        }
        usleep(10000);
    }
}
