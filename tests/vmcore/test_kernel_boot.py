"""One real boot of libkrunfw's kernel in our VMM, root on our virtio-blk (ext4 made by ``mke2fs -d``).

A ``vm`` test (the nested rig runs it on hosts without hardware KVM): the kernel boots to ``Run /init``, our
static /init prints a marker on the console and reboots.
"""

from __future__ import annotations

import pytest

from _vmcore.devices.virtio_mmio import STATUS_DRIVER_OK
from _vmcore.errors import BootError
from _vmcore.kernels import find_kernel
from _vmcore.machine import Disk, Machine, MachineConfig
from tests.timeouts import BOOT, scaled
from tests.vmcore.guestimage import build_root_image

pytestmark = [pytest.mark.vm, pytest.mark.kernel_boot]

MARKER = "MSB-INIT-MARKER: hello from /init"
INIT_C = r"""
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/reboot.h>
int main(void) {
    const char *msg = "\n%s\n";
    int fd = open("/dev/console", O_WRONLY);
    if (fd < 0) fd = 1;
    write(fd, msg, strlen(msg));
    sync();
    reboot(RB_AUTOBOOT);  /* reboot=k: the i8042 reset ends the VM */
    return 0;
}
""".replace("%s", MARKER)


@pytest.fixture(scope="module")
def root_image(tmp_path_factory):
    return build_root_image(tmp_path_factory.mktemp("rootfs"), INIT_C)


@pytest.fixture(scope="module")
def booted(root_image):
    cfg = MachineConfig(
        kernel=str(find_kernel().path),
        memory_mib=256,
        disks=[Disk(str(root_image), read_only=True, serial="rootfs")],
        cmdline_extra="root=/dev/vda ro rootfstype=ext4 init=/init",
    )
    m = Machine(cfg)
    try:
        m.start()
        m.wait_for_console(r"Run /init as init process", timeout=BOOT)
        m.wait_for_console(MARKER, timeout=BOOT)
        m.wait(timeout=scaled(30))
        yield m
    finally:
        m.close()


def test_boots_to_init_with_root_on_virtio_blk(booted):
    log = booted.console.text()
    assert log, "nothing on hvc0: virtio-console never probed"
    assert all(t.status & STATUS_DRIVER_OK for t in booted.transports), "a virtio device was not driven"
    assert "virtio_blk virtio1: [vda] 32768 512-byte logical blocks" in log
    assert "EXT4-fs (vda): mounted filesystem" in log and " ro with " in log
    assert "VFS: Mounted root (ext4 filesystem) readonly on device" in log
    assert "Run /init as init process" in log
    assert booted.disks[0].counters["read"] > 0 and booted.disks[0].counters["write"] == 0
    assert booted.device_errors == []


def test_init_prints_marker(booted):
    assert MARKER in booted.console.text()
    assert booted.exit_reason == "reset"


def test_boot_error_names_the_console_tail(booted):
    """The machine has stopped; waiting for more gives a typed error with what the guest said last."""
    with pytest.raises(BootError) as info:
        booted.wait_for_console("this never appears", timeout=1)
    assert info.value.console_tail
