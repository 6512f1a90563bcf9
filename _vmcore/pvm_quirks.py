"""What to do with an instruction that kvm_pvm failed to emulate in guest kernel mode.

kvm_pvm runs the guest kernel through an instruction emulator that lacks a few instructions the kernel uses:
``int3`` (text patching, kprobes) must still raise #BP in the guest, while ``fwait`` and ``(v)ldmxcsr`` are
harmless to step over for a kernel that does no floating point. Anything else is a real failure.
"""

from __future__ import annotations

PREFIXES = frozenset({0x66, 0xF2, 0xF3, 0x2E, 0x3E, 0x26, 0x36, 0x64, 0x65, 0xF0, *range(0x40, 0x50)})
INT3, SKIP = "int3", "skip"


def modrm_length(code: bytes) -> int | None:
    """Bytes taken by a ModRM operand (ModRM, SIB, displacement) at the start of ``code``; None if truncated."""
    if not code:
        return None
    modrm = code[0]
    mod, rm, n = modrm >> 6, modrm & 7, 1
    if mod == 3:
        return 1
    if rm == 4:
        if len(code) < 2:
            return None
        n += 1
        if mod == 0 and code[1] & 7 == 5:
            n += 4
    elif mod == 0 and rm == 5:
        n += 4
    n += {1: 1, 2: 4}.get(mod, 0)
    return n if n <= len(code) else None


def classify(insn: bytes) -> tuple[str, int] | None:
    """``(INT3, length)`` to re-inject #BP after the instruction, ``(SKIP, length)`` to step over it, or None."""
    i = 0
    while i < len(insn) and insn[i] in PREFIXES:
        i += 1
    rest = insn[i:]
    if not rest:
        return None
    if rest[0] == 0xCC:
        return INT3, i + 1
    if rest[0] == 0x9B:  # fwait
        return SKIP, i + 1
    if len(rest) >= 3 and rest[0] == 0x0F and rest[1] == 0xAE and (rest[2] >> 3) & 7 == 2:  # ldmxcsr m32
        m = modrm_length(rest[2:])
        return (SKIP, i + 2 + m) if m and rest[2] >> 6 != 3 else None
    if len(rest) >= 4 and rest[0] == 0xC5 and rest[2] == 0xAE and (rest[3] >> 3) & 7 == 2:  # vldmxcsr m32
        m = modrm_length(rest[3:])
        return (SKIP, i + 3 + m) if m and rest[3] >> 6 != 3 else None
    return None
