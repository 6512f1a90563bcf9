"""Kernel loaders: libkrunfw's raw image (through the .so), an ELF ``vmlinux``, or a ``bzImage``.

Each loader returns a ``KernelImage``: the bytes to place in guest RAM, where, and the 64-bit entry point.
Nothing here touches KVM; ``place()`` writes into a ``GuestMemory``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from _vmcore.errors import KernelLoadError

ELF_MAGIC = b"\x7fELF"
ET_EXEC, ET_DYN = 2, 3
PT_LOAD = 1
BZIMAGE_LOAD_ADDR = 0x100000
HDRS_MAGIC = 0x53726448  # "HdrS"
XLF_KERNEL_64 = 1


@dataclass
class KernelImage:
    kind: str  # krunfw | elf | bzimage
    entry: int
    segments: list[tuple[int, bytes, int]]  # (guest address, file bytes, memory size >= len(bytes))
    setup_header: bytes = b""  # bzImage: bytes 0x1f1.. of the image, copied into boot_params
    source: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def end(self) -> int:
        return max(addr + memsz for addr, _, memsz in self.segments)

    def place(self, mem) -> None:
        """Copy every segment into guest memory (zero-filling up to its memory size)."""
        for addr, data, memsz in self.segments:
            if not mem.check(addr, memsz):
                raise KernelLoadError(
                    f"{self.kind} kernel segment {addr:#x}+{memsz:#x} does not fit in {mem.size >> 20} MiB of RAM"
                )
            mem.write(addr, data)
            if memsz > len(data):
                mem.fill(addr + len(data), memsz - len(data), 0)


def load_krunfw(path: str | Path) -> KernelImage:
    from _vmcore.krunfw import get_kernel

    load_addr, entry, image = get_kernel(str(path))
    if not load_addr <= entry < load_addr + len(image):
        raise KernelLoadError(f"{path}: entry {entry:#x} lies outside the image at {load_addr:#x}")
    return KernelImage("krunfw", entry, [(load_addr, image, len(image))], source=str(path))


def parse_elf(data: bytes, source: str = "") -> KernelImage:
    if len(data) < 64 or data[:4] != ELF_MAGIC:
        raise KernelLoadError(f"{source}: not an ELF file")
    if data[4] != 2 or data[5] != 1:
        raise KernelLoadError(f"{source}: not a little-endian 64-bit ELF")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_machine != 62:
        raise KernelLoadError(f"{source}: ELF machine {e_machine} is not x86-64")
    if e_type != ET_EXEC:
        raise KernelLoadError(f"{source}: ELF type {e_type} is not an executable vmlinux")
    (e_entry,) = struct.unpack_from("<Q", data, 24)
    (e_phoff,) = struct.unpack_from("<Q", data, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", data, 54)
    if e_phentsize < 56 or e_phoff + e_phnum * e_phentsize > len(data):
        raise KernelLoadError(f"{source}: program headers out of the file")
    segments = []
    for i in range(e_phnum):
        fields = struct.unpack_from("<IIQQQQQQ", data, e_phoff + i * e_phentsize)
        p_type, _, p_offset, _, p_paddr, p_filesz, p_memsz, _ = fields
        if p_type != PT_LOAD:
            continue
        if p_offset + p_filesz > len(data) or p_filesz > p_memsz:
            raise KernelLoadError(f"{source}: PT_LOAD {i} is truncated")
        segments.append((p_paddr, data[p_offset : p_offset + p_filesz], p_memsz))
    if not segments:
        raise KernelLoadError(f"{source}: no PT_LOAD segment")
    return KernelImage("elf", e_entry, segments, source=source)


def parse_bzimage(data: bytes, source: str = "") -> KernelImage:
    if len(data) < 0x250 or struct.unpack_from("<I", data, 0x202)[0] != HDRS_MAGIC:
        raise KernelLoadError(f"{source}: no bzImage setup header")
    (version,) = struct.unpack_from("<H", data, 0x206)
    if version < 0x020C:
        raise KernelLoadError(f"{source}: boot protocol {version:#x} is older than 2.12 (no 64-bit entry)")
    (xloadflags,) = struct.unpack_from("<H", data, 0x236)
    if not xloadflags & XLF_KERNEL_64:
        raise KernelLoadError(f"{source}: bzImage has no 64-bit entry point (xloadflags bit 0)")
    setup_sects = data[0x1F1] or 4
    offset = (setup_sects + 1) * 512
    if offset >= len(data):
        raise KernelLoadError(f"{source}: setup sectors run past the file")
    header_end = 0x202 + data[0x201]
    body = data[offset:]
    return KernelImage(
        "bzimage", BZIMAGE_LOAD_ADDR + 0x200, [(BZIMAGE_LOAD_ADDR, body, len(body))],
        setup_header=data[0x1F1:header_end], source=source,
    )


def load_kernel(path: str | Path) -> KernelImage:
    """Sniff ``path``: a shared object is taken as libkrunfw, an ELF executable as vmlinux, else bzImage."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            head = f.read(64)
    except OSError as e:
        raise KernelLoadError(f"cannot read kernel {p}: {e.strerror}") from None
    if head[:4] == ELF_MAGIC and len(head) >= 18 and struct.unpack_from("<H", head, 16)[0] == ET_DYN:
        return load_krunfw(p)
    data = p.read_bytes()
    if data[:4] == ELF_MAGIC:
        return parse_elf(data, str(p))
    return parse_bzimage(data, str(p))
