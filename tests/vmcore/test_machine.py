"""A whole Machine on /dev/kvm with the trivial guest (runs in guest kernel mode, so kvm_pvm is enough)."""

from __future__ import annotations

import pytest

from _vmcore.errors import BootError, VmmError
from _vmcore.host import KvmKind, detect_kvm
from _vmcore.machine import Disk, Machine, MachineConfig
from tests.support.tinyguest import tiny_guest_elf

KVM = detect_kvm()
needs_kvm = pytest.mark.skipif(KVM.kind is KvmKind.NONE, reason=f"needs /dev/kvm: {KVM.reason}")


@pytest.fixture
def tiny_kernel(tmp_path):
    path = tmp_path / "tiny.elf"
    path.write_bytes(tiny_guest_elf())
    return str(path)


@needs_kvm
def test_trivial_guest_runs_and_resets(tiny_kernel, tmp_path):
    disk = tmp_path / "d.raw"
    disk.write_bytes(bytes(1 << 16))
    cfg = MachineConfig(kernel=tiny_kernel, memory_mib=64, disks=[Disk(str(disk), read_only=True)],
                        console_ports=("agent",))
    with Machine(cfg) as m:
        m.start()
        assert m.wait(timeout=60) == "reset"
        assert m.console.text() == "!"
        assert m.i8042.resets == 1
        assert "virtio_mmio.device=4K@0xd0000000:5" in m.cmdline
        assert "virtio_mmio.device=4K@0xd0001000:6" in m.cmdline
        assert m.device_errors == []


@needs_kvm
def test_boot_error_carries_console_tail(tiny_kernel):
    with Machine(MachineConfig(kernel=tiny_kernel, memory_mib=32)) as m:
        m.start()
        with pytest.raises(BootError) as info:
            m.wait_for_console("never printed", timeout=60)
    assert info.value.console_tail == "!"
    assert info.value.exit_reason == "reset"
    assert "console tail" in str(info.value)


@needs_kvm
def test_start_twice_and_close_twice(tiny_kernel):
    m = Machine(MachineConfig(kernel=tiny_kernel, memory_mib=32))
    m.start()
    with pytest.raises(VmmError, match="already started"):
        m.start()
    m.wait(60)
    m.close()
    m.close()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"memory_mib": 8}, "memory_mib"),
        ({"memory_mib": 4096}, "memory_mib"),
        ({"vcpus": 0}, "vcpus"),
        ({"vcpus": 33}, "vcpus"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(VmmError, match=match):
        Machine(MachineConfig(kernel="/x", **kwargs))


def test_bad_kernel_is_a_clean_error(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"not a kernel" * 100)
    m = Machine(MachineConfig(kernel=str(bad), memory_mib=32, kvm_kind="hardware"))
    with pytest.raises(VmmError, match="bzImage"):
        m.start()
    m.close()


def test_console_lines_and_poweroff_detection():
    m = Machine(MachineConfig(kernel="/unused", memory_mib=32))
    m.console.write(b"[    0.1] Linux version 6.12\n[    0.2] partial")
    assert [line for _, line in m.console.lines] == ["[    0.1] Linux version 6.12"]
    assert m.exit_reason is None
    m.console.write(b" line\r\n[   1.5] reboot: Power down\n")
    assert m.console.lines[-2][1] == "[    0.2] partial line"
    assert m.exit_reason == "poweroff" and m.stopped.is_set()
    assert m.console.tail(1) == "[   1.5] reboot: Power down"
    m.close()
