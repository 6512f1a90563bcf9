"""Guest user space with our devices: a frame round trip over the named virtio-console port (the agent's channel),
a write to a second, writable virtio-blk disk, and /init from an initramfs. Needs hardware KVM (skipped on
kvm_pvm, where no guest user program runs)."""

from __future__ import annotations

import socket
import struct
import subprocess

import pytest

from _vmcore.initramfs import build_initramfs
from _vmcore.kernels import find_kernel
from _vmcore.machine import Disk, Machine, MachineConfig
from tests.timeouts import BOOT, scaled
from tests.vmcore.guestimage import build_root_image, tool

pytestmark = [pytest.mark.vm, pytest.mark.kernel_boot]

INIT_C = r"""
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/reboot.h>

static int read_full(int fd, char *buf, size_t n) {
    size_t got = 0;
    while (got < n) { ssize_t r = read(fd, buf + got, n - got); if (r <= 0) return -1; got += r; }
    return 0;
}

static int open_named_port(const char *want) {
    DIR *d = opendir("/sys/class/virtio-ports");
    struct dirent *e;
    char path[256], name[64];
    while (d && (e = readdir(d))) {
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
        int fd = open(path, O_RDONLY);
        if (fd < 0) continue;
        ssize_t n = read(fd, name, sizeof name - 1);
        close(fd);
        if (n <= 0) continue;
        name[n] = 0;
        if (name[n - 1] == '\n') name[n - 1] = 0;
        if (strcmp(name, want) == 0) { snprintf(path, sizeof path, "/dev/%s", e->d_name); return open(path, O_RDWR); }
    }
    return -1;
}

int main(void) {
    int con = open("/dev/console", O_WRONLY);
    mount("sysfs", "/sys", "sysfs", 0, 0);
    int port = open_named_port("agent");
    unsigned char len[4];
    char buf[256];
    if (port >= 0 && read_full(port, (char *)len, 4) == 0) {
        unsigned n = (len[0] << 24) | (len[1] << 16) | (len[2] << 8) | len[3];
        if (n < sizeof buf && read_full(port, buf, n) == 0) {
            for (unsigned i = 0; i < n; i++) buf[i] = toupper((unsigned char)buf[i]);
            write(port, len, 4);
            write(port, buf, n);
        }
    }
    int disk = open("/dev/vdb", O_RDWR);
    if (disk >= 0) { write(disk, "MSB-DISK-WRITE", 14); fsync(disk); close(disk); }
    dprintf(con, "\nGUEST-IO-DONE port=%d disk=%d\n", port, disk);
    sync();
    reboot(RB_AUTOBOOT);
    return 0;
}
"""


def test_agent_port_round_trip_and_disk_write(tmp_path):
    root = build_root_image(tmp_path, INIT_C)
    data = tmp_path / "data.raw"
    data.write_bytes(bytes(1 << 20))
    cfg = MachineConfig(
        kernel=str(find_kernel().path), memory_mib=256, console_ports=("agent",),
        disks=[Disk(str(root), read_only=True), Disk(str(data), serial="data")],
        cmdline_extra="root=/dev/vda ro rootfstype=ext4 init=/init",
    )
    with Machine(cfg) as m:
        m.start()
        sock: socket.socket = m.agent_socket("agent")
        sock.settimeout(BOOT)
        sock.sendall(struct.pack(">I", 5) + b"hello")
        reply = b""
        while len(reply) < 9:
            chunk = sock.recv(64)
            assert chunk, "agent port closed"
            reply += chunk
        m.wait_for_console(r"GUEST-IO-DONE port=\d+ disk=\d+", timeout=BOOT)
        assert m.wait(timeout=scaled(30)) == "reset"
    assert reply == struct.pack(">I", 5) + b"HELLO"
    assert data.read_bytes()[:14] == b"MSB-DISK-WRITE"


INITRAMFS_INIT_C = r"""
#include <fcntl.h>
#include <unistd.h>
#include <sys/reboot.h>
int main(void) {
    int con = open("/dev/console", O_WRONLY);
    write(con, "\nINITRAMFS-INIT-RAN\n", 20);
    reboot(RB_AUTOBOOT);
    return 0;
}
"""


def test_boot_from_initramfs(tmp_path):
    """The production path: libkrunfw's kernel with our static program as the initramfs /init."""
    (tmp_path / "init.c").write_text(INITRAMFS_INIT_C)
    subprocess.run([tool("cc"), "-static", "-O2", "-o", str(tmp_path / "init"), str(tmp_path / "init.c")],
                   check=True)
    cfg = MachineConfig(kernel=str(find_kernel().path), memory_mib=128,
                        initramfs=build_initramfs(agent=(tmp_path / "init").read_bytes()))
    with Machine(cfg) as m:
        m.start()
        m.wait_for_console("INITRAMFS-INIT-RAN", timeout=BOOT)
        assert m.wait(timeout=scaled(30)) == "reset"
