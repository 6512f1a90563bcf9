"""The x86 Linux boot protocol as seen from a 64-bit entry: zero page, e820 map, command line, GDT and
identity-mapped page tables, laid out in low guest memory.

Layout (guest physical):
    0x500   GDT (null, null, code 0x10, data 0x18, TSS 0x20)     0x520  IDT (empty)
    0x7000  boot_params (the "zero page")                          0x8ff0 initial stack
    0x9000  PML4, 0xa000 PDPT, 0xb000.. four page directories (2 MiB pages over the first 4 GiB)
    0x20000 kernel command line                                    initrd: page-aligned at the top of RAM
"""

from __future__ import annotations

import functools
import struct

from _vmcore.errors import KernelLoadError

GDT_ADDR = 0x500
IDT_ADDR = 0x520
BOOT_PARAMS_ADDR = 0x7000
STACK_ADDR = 0x8FF0
PML4_ADDR = 0x9000
PDPT_ADDR = 0xA000
PD_ADDR = 0xB000
CMDLINE_ADDR = 0x20000
CMDLINE_MAX = 0x10000
EBDA_START = 0x9FC00
HIMEM_START = 0x100000

E820_RAM, E820_RESERVED = 1, 2
GDT_ENTRIES = (0, 0, 0x00AF9B000000FFFF, 0x00CF93000000FFFF, 0x008F8B000000FFFF)

# offsets in boot_params
OFF_EXT_RAMDISK_IMAGE = 0x0C0
OFF_EXT_RAMDISK_SIZE = 0x0C4
OFF_EXT_CMD_LINE_PTR = 0x0C8
OFF_E820_ENTRIES = 0x1E8
OFF_SETUP_HEADER = 0x1F1
OFF_BOOT_FLAG = 0x1FE
OFF_HEADER = 0x202
OFF_VERSION = 0x206
OFF_TYPE_OF_LOADER = 0x210
OFF_LOADFLAGS = 0x211
OFF_RAMDISK_IMAGE = 0x218
OFF_RAMDISK_SIZE = 0x21C
OFF_HEAP_END_PTR = 0x224
OFF_CMD_LINE_PTR = 0x228
OFF_CMDLINE_SIZE = 0x238
OFF_E820_TABLE = 0x2D0
E820_MAX = 128


def e820_map(mem_size: int) -> list[tuple[int, int, int]]:
    """Low RAM below the EBDA, the EBDA reserved, then RAM from 1 MiB to the end."""
    if mem_size <= HIMEM_START:
        raise KernelLoadError(f"guest memory {mem_size:#x} is below 1 MiB")
    return [(0, EBDA_START, E820_RAM), (EBDA_START, 0xA0000 - EBDA_START, E820_RESERVED),
            (HIMEM_START, mem_size - HIMEM_START, E820_RAM)]


def build_boot_params(mem_size: int, cmdline_addr: int, cmdline_len: int, initrd: tuple[int, int] | None = None,
                      setup_header: bytes = b"") -> bytes:
    """The 4 KiB zero page. ``setup_header`` (a bzImage's own header from 0x1f1) is copied first."""
    bp = bytearray(4096)
    if setup_header:
        bp[OFF_SETUP_HEADER : OFF_SETUP_HEADER + len(setup_header)] = setup_header
    else:
        struct.pack_into("<H", bp, OFF_VERSION, 0x020F)
    struct.pack_into("<H", bp, OFF_BOOT_FLAG, 0xAA55)
    struct.pack_into("<I", bp, OFF_HEADER, 0x53726448)
    bp[OFF_TYPE_OF_LOADER] = 0xFF
    bp[OFF_LOADFLAGS] |= 0x01 | 0x80  # LOADED_HIGH, CAN_USE_HEAP
    struct.pack_into("<H", bp, OFF_HEAP_END_PTR, 0xFE00)
    struct.pack_into("<I", bp, OFF_CMD_LINE_PTR, cmdline_addr & 0xFFFFFFFF)
    struct.pack_into("<I", bp, OFF_EXT_CMD_LINE_PTR, cmdline_addr >> 32)
    struct.pack_into("<I", bp, OFF_CMDLINE_SIZE, cmdline_len)
    if initrd is not None:
        addr, size = initrd
        struct.pack_into("<I", bp, OFF_RAMDISK_IMAGE, addr & 0xFFFFFFFF)
        struct.pack_into("<I", bp, OFF_RAMDISK_SIZE, size & 0xFFFFFFFF)
        struct.pack_into("<I", bp, OFF_EXT_RAMDISK_IMAGE, addr >> 32)
        struct.pack_into("<I", bp, OFF_EXT_RAMDISK_SIZE, size >> 32)
    entries = e820_map(mem_size)
    bp[OFF_E820_ENTRIES] = len(entries)
    for i, (addr, size, kind) in enumerate(entries):
        struct.pack_into("<QQI", bp, OFF_E820_TABLE + 20 * i, addr, size, kind)
    return bytes(bp)


@functools.cache
def page_tables() -> tuple[tuple[int, bytes], ...]:
    """Identity map of the first 4 GiB with 2 MiB pages: PML4 -> one PDPT -> four page directories."""
    pml4 = struct.pack("<Q", PDPT_ADDR | 0x3).ljust(4096, b"\0")
    pdpt = b"".join(struct.pack("<Q", (PD_ADDR + i * 4096) | 0x3) for i in range(4)).ljust(4096, b"\0")
    pds = b"".join(struct.pack("<Q", (i << 21) | 0x83) for i in range(4 * 512))
    return ((PML4_ADDR, pml4), (PDPT_ADDR, pdpt), (PD_ADDR, pds))


def gdt() -> bytes:
    return b"".join(struct.pack("<Q", e) for e in GDT_ENTRIES)


def write_boot_layout(mem, cmdline: str, initrd: bytes | None = None, setup_header: bytes = b"",
                      kernel_end: int = 0) -> dict:
    """Write GDT, page tables, command line, initrd and boot_params into ``mem``; returns the addresses used."""
    raw_cmdline = cmdline.encode() + b"\0"
    if len(raw_cmdline) > CMDLINE_MAX:
        raise KernelLoadError(f"kernel command line is {len(raw_cmdline)} bytes, over {CMDLINE_MAX}")
    mem.write(GDT_ADDR, gdt())
    mem.fill(IDT_ADDR, 8, 0)
    for addr, data in page_tables():
        mem.write(addr, data)
    mem.write(CMDLINE_ADDR, raw_cmdline)
    initrd_range = None
    if initrd:
        addr = (mem.size - len(initrd)) & ~0xFFF
        if addr < max(kernel_end, HIMEM_START):
            raise KernelLoadError(f"initramfs of {len(initrd)} bytes does not fit above the kernel")
        mem.write(addr, initrd)
        initrd_range = (addr, len(initrd))
    mem.write(BOOT_PARAMS_ADDR, build_boot_params(mem.size, CMDLINE_ADDR, len(raw_cmdline) - 1, initrd_range,
                                                  setup_header))
    return {"boot_params": BOOT_PARAMS_ADDR, "gdt": GDT_ADDR, "gdt_limit": len(GDT_ENTRIES) * 8 - 1,
            "idt": IDT_ADDR, "pml4": PML4_ADDR, "stack": STACK_ADDR, "initrd": initrd_range}
