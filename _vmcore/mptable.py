"""An Intel MultiProcessor Specification 1.4 table, so the guest finds every vCPU and the I/O APIC without
ACPI. It lives in the reserved EBDA page (0x9fc00), which Linux scans for the "_MP_" floating pointer.

Entries: one processor per vCPU (APIC id = index, vCPU 0 the bootstrap processor), an ISA bus, the in-kernel
I/O APIC (id = vcpus, at 0xfec00000) with ISA IRQ n wired to pin n, ExtINT to LINT0 and NMI to LINT1.
"""

from __future__ import annotations

import struct

MPTABLE_ADDR = 0x9FC00
MPTABLE_LIMIT = 0xA0000
APIC_DEFAULT_BASE = 0xFEE00000
IOAPIC_BASE = 0xFEC00000
IOAPIC_PINS = 24
APIC_VERSION = 0x14
IOAPIC_VERSION = 0x11
CPU_ENABLED, CPU_BOOTSTRAP = 1, 2
INT_TYPE_INT, INT_TYPE_NMI, INT_TYPE_EXTINT = 0, 1, 3
MAX_VCPUS = 32  # what fits in the 1 KiB EBDA page


def _checksum(data: bytes) -> int:
    return (-sum(data)) & 0xFF


def build_mptable(vcpus: int, base: int = MPTABLE_ADDR) -> bytes:
    """The floating pointer followed by the configuration table, ready to copy to ``base``."""
    if not 1 <= vcpus <= MAX_VCPUS:
        raise ValueError(f"vcpus must be between 1 and {MAX_VCPUS}")
    ioapic_id = vcpus
    entries = []
    for cpu in range(vcpus):
        flags = CPU_ENABLED | (CPU_BOOTSTRAP if cpu == 0 else 0)
        entries.append(struct.pack("<BBBBII8x", 0, cpu, APIC_VERSION, flags, 0x600, 0x201))
    entries.append(struct.pack("<BB6s", 1, 0, b"ISA   "))
    entries.append(struct.pack("<BBBBI", 2, ioapic_id, IOAPIC_VERSION, 1, IOAPIC_BASE))
    for pin in range(16):
        entries.append(struct.pack("<BBHBBBB", 3, INT_TYPE_INT, 0, 0, pin, ioapic_id, pin))
    entries.append(struct.pack("<BBHBBBB", 4, INT_TYPE_EXTINT, 0, 0, 0, 0xFF, 0))
    entries.append(struct.pack("<BBHBBBB", 4, INT_TYPE_NMI, 0, 0, 0, 0xFF, 1))
    body = b"".join(entries)
    config_addr = base + 16
    header = struct.pack("<4sHBB8s12sIHHIHBB", b"PCMP", 44 + len(body), 4, 0, b"MSBX    ", b"microVM     ",
                         0, 0, len(entries), APIC_DEFAULT_BASE, 0, 0, 0)
    config = bytearray(header + body)
    config[7] = _checksum(config)
    floating = bytearray(struct.pack("<4sIBBB5x", b"_MP_", config_addr, 1, 4, 0))
    floating[10] = _checksum(floating)
    table = bytes(floating) + bytes(config)
    if base + len(table) > MPTABLE_LIMIT:
        raise ValueError(f"MP table for {vcpus} vCPUs does not fit below {MPTABLE_LIMIT:#x}")
    return table
