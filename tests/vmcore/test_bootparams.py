from __future__ import annotations

import struct

import pytest

from _vmcore import bootparams as bp
from _vmcore.errors import KernelLoadError
from _vmcore.memory import GuestMemory


@pytest.fixture
def ram():
    m = GuestMemory(64 << 20)
    yield m
    m.close()


def test_e820_map():
    assert bp.e820_map(64 << 20) == [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0x100000, (64 << 20) - 0x100000, 1)]


def test_boot_layout(ram):
    initrd = b"\x07" * 5000
    layout = bp.write_boot_layout(ram, "console=hvc0 root=/dev/vda", initrd)
    page = ram.read(bp.BOOT_PARAMS_ADDR, 4096)
    assert struct.unpack_from("<H", page, 0x1FE)[0] == 0xAA55
    assert page[0x202:0x206] == b"HdrS"
    assert page[0x210] == 0xFF
    cmd_ptr, = struct.unpack_from("<I", page, 0x228)
    assert ram.read(cmd_ptr, 27) == b"console=hvc0 root=/dev/vda\0"
    assert struct.unpack_from("<I", page, 0x238)[0] == 26
    addr, size = struct.unpack_from("<II", page, 0x218)
    assert (addr, size) == layout["initrd"] and size == 5000
    assert addr % 4096 == 0 and addr + size <= ram.size and ram.read(addr, 3) == b"\x07" * 3
    assert page[0x1E8] == 3
    assert struct.unpack_from("<QQI", page, 0x2D0 + 40) == (0x100000, ram.size - 0x100000, 1)


def test_gdt_and_page_tables(ram):
    bp.write_boot_layout(ram, "")
    assert ram.read_u64(bp.GDT_ADDR + 0x10) == 0x00AF9B000000FFFF  # 64-bit code at selector 0x10
    assert ram.read_u64(bp.GDT_ADDR + 0x18) == 0x00CF93000000FFFF
    assert ram.read_u64(bp.PML4_ADDR) == bp.PDPT_ADDR | 3
    assert ram.read_u64(bp.PDPT_ADDR + 8 * 3) == (bp.PD_ADDR + 3 * 4096) | 3
    # the last 2 MiB page of the 4 GiB identity map
    assert ram.read_u64(bp.PD_ADDR + 8 * 2047) == (2047 << 21) | 0x83


def test_bzimage_setup_header_is_kept(ram):
    header = bytes([4]) + bytes(0x20)
    bp.write_boot_layout(ram, "", setup_header=header)
    assert ram.read_u8(bp.BOOT_PARAMS_ADDR + 0x1F1) == 4


def test_initrd_must_fit_above_kernel(ram):
    with pytest.raises(KernelLoadError, match="initramfs"):
        bp.write_boot_layout(ram, "", b"x" * (60 << 20), kernel_end=16 << 20)


def test_command_line_too_long(ram):
    with pytest.raises(KernelLoadError, match="command line"):
        bp.write_boot_layout(ram, "x" * bp.CMDLINE_MAX)
