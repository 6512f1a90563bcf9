"""libkrunfw's kernel in our VMM mounts its root over virtio-fs served by our FUSE server and runs /init from it.

A ``vm`` test: the nested rig runs it on hosts without hardware KVM.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

machine = pytest.importorskip("_vmcore.machine", reason="the VMM (_vmcore.machine) is not here")

from _vmcore.devices.virtio_fs import VirtioFs  # noqa: E402
from _vmcore.fs import FuseServer  # noqa: E402
from tests.timeouts import BOOT, scaled  # noqa: E402

pytestmark = [pytest.mark.vm, pytest.mark.kernel_boot, pytest.mark.slow]

INIT_C = r"""
#include <unistd.h>
#include <sys/reboot.h>
int main(void) { write(1, "\nMSB-VIRTIOFS-ROOT\n", 19); reboot(RB_AUTOBOOT); return 0; }
"""


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory):
    try:
        from _vmcore.kernels import find_kernel

        kernel = find_kernel().path
    except Exception as err:  # noqa: BLE001 - no kernel here is a skip, with the reason
        pytest.skip(f"no guest kernel: {err}")
    if shutil.which("cc") is None:
        pytest.skip("no C compiler for the guest's /init")
    root = tmp_path_factory.mktemp("virtiofs-root")
    for d in ("dev", "proc", "sys", "tmp"):
        (root / d).mkdir()
    (root / "init.c").write_text(INIT_C)
    subprocess.run(["cc", "-static", "-O2", "-o", str(root / "init"), str(root / "init.c")], check=True, timeout=120)
    device = VirtioFs(FuseServer(root, readonly=True), "rootfs")
    cfg = machine.MachineConfig(kernel=str(kernel), memory_mib=256, shares=[device],
                                cmdline_extra="rootfstype=virtiofs root=rootfs ro init=/init")
    m = machine.Machine(cfg)
    try:
        m.start()
        m.wait_for_console(r"Run /init as init process", timeout=BOOT)
        m.wait_for_console("MSB-VIRTIOFS-ROOT", timeout=BOOT)
        m.wait(timeout=scaled(30))
        yield m, device
    finally:
        m.close()


def test_kernel_mounts_root_over_our_virtio_fs(booted) -> None:
    m, device = booted
    log = m.console.text()
    assert "VFS: Mounted root (virtiofs filesystem) readonly" in log, log[-3000:]
    assert "Run /init as init process" in log
    assert device.counters["requests"] > 0 and device.counters["bad_chains"] == 0
    counts = device.server.request_counts()
    assert counts.get(26) == 1 and counts.get(1, 0) > 0   # INIT once, then lookups (of /init among others)
    assert not {16, 35, 9, 10} & set(counts)              # a read-only root: no WRITE, CREATE, MKDIR, UNLINK
    assert m.device_errors == []

