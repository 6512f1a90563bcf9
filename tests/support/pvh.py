"""Wrap a raw x86-64 kernel image (libkrunfw's) into a PVH ELF that QEMU's ``-kernel`` can boot.

QEMU cannot load libkrunfw's raw image (no bzImage header, no ELF), but it boots an ELF carrying a
``XEN_ELFNOTE_PHYS32_ENTRY`` note in 32-bit protected mode with ``%ebx`` pointing at an ``hvm_start_info``. Our
segment holds a small trampoline (``pvh_trampoline.S``, beside this file) plus the page tables, GDT and a
boot_params page prepared here; the trampoline fills in what only QEMU knows (command line, initrd, memory map),
enters long mode and jumps to the kernel's 64-bit entry. A test harness for the guest side, not how our own VMM
boots.
"""

from __future__ import annotations

import ctypes
import glob
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from _vmcore.errors import GuestImageError

BASE = 0x200000  # where the trampoline segment lives (matches pvh_trampoline.S)
SEGMENT_SIZE = 0x10000
_PML4, _PDPT, _PD, _BOOT_PARAMS, _ENTRY_SLOT = 0x1000, 0x2000, 0x3000, 0x7000, 0x200
_XEN_ELFNOTE_PHYS32_ENTRY = 18

# `as --64 pvh_trampoline.S; objcopy -O binary -j .text` (tests/vmcore/test_pvh_wrapper.py checks them against it)
TRAMPOLINE = bytes.fromhex(
    "fcbf007020008b43188987280200008b43208947708b4b0c85c974148b73108b068987180200008b460889871c020000"
    "837b0401722d8b4b3085c9742681f9800000007605b980000000888fe80100008b732881c7d0020000a5a5a5a5a583c6"
    "04e2f60f0115180120000f20e083c8200f22e0b8001020000f22d8b9800000c00f320d000100000f300f20c00d010000"
    "800f22c0ea9b0020000800b8100000008ed88ec08ed08ee08ee848c7c40000210048c7c600702000488b042500022000"
    "ffe000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000ffff0000009aaf00ffff00000092cf001700000120000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000"
)


@dataclass(frozen=True)
class RawKernel:
    """A kernel image to copy to ``load_addr`` and enter at ``entry`` in 64-bit mode."""

    data: bytes
    load_addr: int
    entry: int

    @property
    def release(self) -> str:
        """The kernel release (``uname -r``) read from its banner."""
        m = re.search(rb"Linux version (\S+)", self.data)
        if not m:
            raise GuestImageError("no Linux version banner in the kernel image")
        return m.group(1).decode()


def find_libkrunfw() -> Path | None:
    """libkrunfw from ``MSB_KERNEL`` (a path), the system, or the microsandbox wheel's bundled copy."""
    env = os.environ.get("MSB_KERNEL")
    if env and Path(env).is_file() and "libkrunfw" in Path(env).name:
        return Path(env)
    candidates = glob.glob("/usr/lib*/libkrunfw.so*") + glob.glob("/usr/lib/*/libkrunfw.so*")
    candidates += glob.glob("/usr/local/lib*/libkrunfw.so*")
    try:
        import microsandbox  # the wheel bundles libkrunfw

        pkg = Path(microsandbox.__file__).parent
        candidates += glob.glob(str(pkg / "_bundled" / "lib" / "libkrunfw.so*"))
    except ImportError:
        pass
    files = sorted({c for c in candidates if os.path.isfile(c)}, key=len, reverse=True)
    return Path(files[0]) if files else None


def load_libkrunfw_kernel(path: str | Path) -> RawKernel:
    """Call ``krunfw_get_kernel(&load_addr, &entry, &size)`` and copy the image out."""
    try:
        lib = ctypes.CDLL(str(path))
        get = lib.krunfw_get_kernel
    except (OSError, AttributeError) as e:
        raise GuestImageError(f"{path} is not a usable libkrunfw: {e}") from None
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_size_t)]
    load, entry, size = ctypes.c_uint64(), ctypes.c_uint64(), ctypes.c_size_t()
    ptr = get(ctypes.byref(load), ctypes.byref(entry), ctypes.byref(size))
    if not ptr or not size.value:
        raise GuestImageError(f"{path}: krunfw_get_kernel returned no image")
    return RawKernel(ctypes.string_at(ptr, size.value), load.value, entry.value)


def _boot_params(memory_mib: int) -> bytes:
    bp = bytearray(4096)
    struct.pack_into("<H", bp, 0x1FE, 0xAA55)  # boot_flag
    bp[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", bp, 0x206, 0x020F)  # boot protocol version
    bp[0x210] = 0xFF  # type_of_loader: undefined
    bp[0x211] = 0x01  # loadflags: LOADED_HIGH
    struct.pack_into("<I", bp, 0x22C, 0x7FFFFFFF)  # initrd_addr_max
    struct.pack_into("<I", bp, 0x230, 0x1000000)  # kernel_alignment
    struct.pack_into("<I", bp, 0x238, 4095)  # cmdline_size
    # fallback memory map, replaced by QEMU's when hvm_start_info carries one
    ram = memory_mib << 20
    e820 = [(0, 0x9FC00, 1), (0x100000, min(ram, 0xC0000000) - 0x100000, 1)]
    bp[0x1E8] = len(e820)
    for i, (addr, size, kind) in enumerate(e820):
        struct.pack_into("<QQI", bp, 0x2D0 + 20 * i, addr, size, kind)
    return bytes(bp)


def _trampoline_segment(entry: int, memory_mib: int) -> bytes:
    seg = bytearray(SEGMENT_SIZE)
    seg[: len(TRAMPOLINE)] = TRAMPOLINE
    struct.pack_into("<Q", seg, _ENTRY_SLOT, entry)
    struct.pack_into("<Q", seg, _PML4, (BASE + _PDPT) | 0x3)
    for gib in range(4):  # identity map of the first 4 GiB in 2 MiB pages
        struct.pack_into("<Q", seg, _PDPT + 8 * gib, (BASE + _PD + 0x1000 * gib) | 0x3)
        for j in range(512):
            struct.pack_into("<Q", seg, _PD + 0x1000 * gib + 8 * j, ((gib << 30) + (j << 21)) | 0x83)
    seg[_BOOT_PARAMS : _BOOT_PARAMS + 4096] = _boot_params(memory_mib)
    return bytes(seg)


def pvh_elf(kernel: RawKernel, memory_mib: int = 512) -> bytes:
    """An ELF64 with the trampoline segment, the kernel image at its load address and the PVH entry note."""
    if kernel.load_addr < BASE + SEGMENT_SIZE:
        raise GuestImageError(f"kernel load address {kernel.load_addr:#x} overlaps the trampoline")
    if len(TRAMPOLINE) > _ENTRY_SLOT + 8:
        raise GuestImageError("trampoline bytes overflow their slot")
    note = struct.pack("<III", 4, 8, _XEN_ELFNOTE_PHYS32_ENTRY) + b"Xen\0" + struct.pack("<Q", BASE)
    ehsize, phentsize, phnum = 64, 56, 3
    note_off = ehsize + phentsize * phnum
    tramp_off = 0x1000
    kernel_off = tramp_off + SEGMENT_SIZE
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, BASE, ehsize, 0, 0, ehsize, phentsize, phnum, 64, 0, 0)

    def phdr(ptype: int, flags: int, off: int, addr: int, size: int, align: int) -> bytes:
        return struct.pack("<IIQQQQQQ", ptype, flags, off, addr, addr, size, size, align)

    phdrs = (
        phdr(1, 7, tramp_off, BASE, SEGMENT_SIZE, 0x1000)
        + phdr(1, 7, kernel_off, kernel.load_addr, len(kernel.data), 0x1000)
        + phdr(4, 4, note_off, 0, len(note), 4)
    )
    out = bytearray(header + phdrs + note)
    out += bytes(tramp_off - len(out))
    out += _trampoline_segment(kernel.entry, memory_mib)
    out += kernel.data
    return bytes(out)
