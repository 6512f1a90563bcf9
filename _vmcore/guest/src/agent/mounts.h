/* The mounts of a boot config: one spec (virtiofs, tmpfs, block device, bind) parsed and mounted. */
#ifndef MSB_MOUNTS_H
#define MSB_MOUNTS_H

#include "agent.h"

enum { SRC_VIRTIOFS = 1, SRC_TMPFS = 2, SRC_BLOCK_SERIAL = 3, SRC_BLOCK_PATH = 4, SRC_BIND = 5, SRC_OVERLAY = 6 };
enum { F_RDONLY = 1, F_NOEXEC = 2, F_NOSUID = 4, F_NODEV = 8 };

struct mount_spec {
    int64_t kind, flags, size_mib, mode;
    char *source, *target, *fstype;
    int source_fd; /* bind, overlay: the source opened before the root switch hid it (-1: use `source`) */
};

int parse_spec(const struct field *outer, struct mount_spec *m); /* 0, or -1 with errno EINVAL */
void spec_free(struct mount_spec *m);
/* True when `m->source` is a path of the old root (a bind, an overlay over a path) rather than a device or tag. */
int spec_source_is_path(const struct mount_spec *m);
/* Mount `m` on `target` with `extra` flags (restricted: nosuid,nodev forced); err gets a message on failure. */
int mount_spec_at(struct mount_spec *m, const char *target, unsigned long extra, int restricted, char *err,
                  size_t errlen);

#endif
