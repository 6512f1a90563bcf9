"""A trivial guest for self-tests and benchmarks: an ELF that writes one byte to COM1 and asks the i8042 for a
reset. Its code means the same in 32-bit protected mode and in 64-bit mode, and it carries a PVH entry note,
so QEMU (``-M microvm -kernel``) and our VMM (ELF loader, 64-bit entry) run the very same bytes."""

from __future__ import annotations

import struct

LOAD_ADDR = 0x100000
MARKER = b"!"
CODE = bytes([
    0xB0, MARKER[0],          # mov al, '!'
    0x66, 0xBA, 0xF8, 0x03,   # mov dx, 0x3f8
    0xEE,                     # out dx, al
    0xB0, 0xFE,               # mov al, 0xfe
    0xE6, 0x64,               # out 0x64, al   (i8042: reset)
    0xF4,                     # hlt
    0xEB, 0xFD,               # jmp hlt
])
XEN_ELFNOTE_PHYS32_ENTRY = 18


def tiny_guest_elf(code: bytes = CODE) -> bytes:
    ehsize, phsize = 64, 56
    note = struct.pack("<III", 4, 4, XEN_ELFNOTE_PHYS32_ENTRY) + b"Xen\0" + struct.pack("<I", LOAD_ADDR)
    note_off = ehsize + 2 * phsize
    code_off = (note_off + len(note) + 15) & ~15
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    header += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, LOAD_ADDR, ehsize, 0, 0, ehsize, phsize, 2, 64, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 5, code_off, LOAD_ADDR, LOAD_ADDR, len(code), len(code), 0x1000)
    pnote = struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(note), len(note), 4)
    out = header + load + pnote + note
    return out.ljust(code_off, b"\0") + code


def counting_code(last: str = "z", delay: int = 0x100000) -> bytes:
    """A guest that prints 'a', 'b', ... up to ``last`` on COM1, spinning ``delay`` loop turns between letters,
    then resets: a machine snapshotted between two letters must print exactly the rest after a restore."""
    if not "a" <= last <= "z" or not 0 < delay < 1 << 32:
        raise ValueError("last must be a lowercase letter and delay a positive 32-bit count")
    return bytes([
        0x66, 0xBA, 0xF8, 0x03,          # mov dx, 0x3f8
        0xB0, ord("a"),                  # mov al, 'a'
        0xEE,                            # next: out dx, al
        0xB9, *struct.pack("<I", delay),  # mov ecx, delay
        0xFF, 0xC9,                      # spin: dec ecx
        0x75, 0xFC,                      # jnz spin
        0xFE, 0xC0,                      # inc al
        0x3C, ord(last) + 1,             # cmp al, last + 1
        0x75, 0xF0,                      # jne next
        0xB0, 0xFE, 0xE6, 0x64,          # i8042 reset
        0xF4, 0xEB, 0xFD,                # hlt; jmp hlt
    ])
