"""The PVH wrapper: the ELF QEMU needs, and trampoline bytes that match their assembly source."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from _vmcore.errors import GuestImageError
from tests.support import pvh

SOURCE = Path(pvh.__file__).parent / "pvh_trampoline.S"
FAKE = pvh.RawKernel(b"\x90" * 4096 + b"Linux version 6.1.2-test (x@y) #1", 0x1000000, 0x1000123)


def phdrs(elf: bytes) -> list[tuple[int, int, int, int, int]]:
    (phoff,) = struct.unpack_from("<Q", elf, 32)
    phentsize, phnum = struct.unpack_from("<HH", elf, 54)
    out = []
    for i in range(phnum):
        ptype, _flags, off, _vaddr, paddr, filesz, _memsz, _align = struct.unpack_from(
            "<IIQQQQQQ", elf, phoff + i * phentsize
        )
        out.append((ptype, off, paddr, filesz, _align))
    return out


def test_elf_layout() -> None:
    elf = pvh.pvh_elf(FAKE, memory_mib=256)
    assert elf[:4] == b"\x7fELF" and elf[4] == 2 and struct.unpack_from("<H", elf, 18)[0] == 62
    (t_load, t_off, t_addr, t_size, _), (k_load, k_off, k_addr, k_size, _), (n_type, n_off, _, n_size, n_align) = phdrs(
        elf
    )
    assert (t_load, k_load, n_type) == (1, 1, 4)
    assert (t_addr, t_size) == (pvh.BASE, pvh.SEGMENT_SIZE)
    assert (k_addr, elf[k_off : k_off + k_size]) == (FAKE.load_addr, FAKE.data)
    namesz, descsz, ntype = struct.unpack_from("<III", elf, n_off)
    assert (namesz, descsz, ntype, n_align) == (4, 8, 18, 4)
    assert elf[n_off + 12 : n_off + 16] == b"Xen\0"
    assert struct.unpack_from("<Q", elf, n_off + 16)[0] == pvh.BASE
    seg = elf[t_off : t_off + t_size]
    assert seg.startswith(pvh.TRAMPOLINE[:0x200])
    assert struct.unpack_from("<Q", seg, 0x200)[0] == FAKE.entry
    bp = seg[0x7000:0x8000]
    assert bp[0x202:0x206] == b"HdrS" and struct.unpack_from("<H", bp, 0x1FE)[0] == 0xAA55
    assert bp[0x1E8] == 2 and struct.unpack_from("<QQI", bp, 0x2D0 + 20)[1] == (256 << 20) - 0x100000
    # identity map: the PD entry for 16 MiB maps 16 MiB as a 2 MiB page
    assert struct.unpack_from("<Q", seg, 0x3000 + 8 * 8)[0] == (16 << 20) | 0x83


def test_release_from_banner() -> None:
    assert FAKE.release == "6.1.2-test"
    with pytest.raises(GuestImageError):
        pvh.RawKernel(b"nothing", 0x1000000, 0x1000000).release  # noqa: B018


def test_refuses_overlapping_load_address() -> None:
    with pytest.raises(GuestImageError):
        pvh.pvh_elf(pvh.RawKernel(b"x", 0x100000, 0x100000))


def test_not_a_libkrunfw(tmp_path) -> None:
    with pytest.raises(GuestImageError):
        pvh.load_libkrunfw_kernel(tmp_path / "missing.so")


@pytest.mark.skipif(shutil.which("as") is None or shutil.which("objcopy") is None, reason="binutils not installed")
def test_trampoline_bytes_match_source(tmp_path) -> None:
    obj, binary = tmp_path / "t.o", tmp_path / "t.bin"
    subprocess.run(["as", "--64", "-o", str(obj), str(SOURCE)], check=True)
    subprocess.run(["objcopy", "-O", "binary", "-j", ".text", str(obj), str(binary)], check=True)
    assert binary.read_bytes() == pvh.TRAMPOLINE


def test_libkrunfw_kernel_when_installed() -> None:
    path = pvh.find_libkrunfw()
    if path is None:
        pytest.skip("libkrunfw not found (the microsandbox wheel bundles it)")
    kernel = pvh.load_libkrunfw_kernel(path)
    assert kernel.load_addr == 0x1000000 and kernel.load_addr <= kernel.entry < kernel.load_addr + len(kernel.data)
    assert kernel.release
