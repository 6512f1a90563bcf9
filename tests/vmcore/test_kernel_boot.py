"""One real boot of libkrunfw's kernel in our VMM, root on our virtio-blk (ext4 made by ``mke2fs -d``).

On kvm_pvm hosts the kernel runs in guest kernel mode only: we check everything up to ``Run /init``.
On hardware KVM the same boot goes on: our static /init prints a marker on the console and reboots.
"""

from __future__ import annotations

import pytest

from _vmcore.devices.virtio_mmio import STATUS_DRIVER_OK
from _vmcore.errors import BootError
from _vmcore.host import KvmKind, detect_kvm
from _vmcore.kernels import find_kernel
from _vmcore.machine import Disk, Machine, MachineConfig
from tests.vmcore.guestimage import build_root_image

pytestmark = pytest.mark.kernel_boot

KVM = detect_kvm()
BOOT_TIMEOUT_S = 420  # about 2 minutes on a loaded 2-core kvm_pvm host; well under a second on hardware KVM
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
    if KVM.kind is KvmKind.NONE:
        pytest.skip(f"needs /dev/kvm: {KVM.reason}")
    cfg = MachineConfig(
        kernel=str(find_kernel().path),
        memory_mib=256,
        disks=[Disk(str(root_image), read_only=True, serial="rootfs")],
        cmdline_extra="root=/dev/vda ro rootfstype=ext4 init=/init",
    )
    m = Machine(cfg)
    try:
        m.start()
        m.wait_for_console(r"Run /init as init process", timeout=BOOT_TIMEOUT_S)
        if KVM.runs_guest_userspace:
            m.wait_for_console(MARKER, timeout=60)
        m.wait(timeout=30)  # kvm_pvm: init cannot run, the kernel panics and resets (panic=-1)
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
    if not KVM.runs_guest_userspace:
        pytest.skip(f"guest /init cannot run here: {KVM.reason}")
    assert MARKER in booted.console.text()
    assert booted.exit_reason == "reset"


def test_boot_error_names_the_console_tail(booted):
    """The machine has stopped; waiting for more gives a typed error with what the guest said last."""
    with pytest.raises(BootError) as info:
        booted.wait_for_console("this never appears", timeout=1)
    assert info.value.console_tail
