from __future__ import annotations

import struct

import pytest

from _vmcore import loader
from _vmcore.errors import KernelLoadError
from _vmcore.kernels import find_kernel
from _vmcore.memory import GuestMemory
from tests.support.tinyguest import CODE, LOAD_ADDR, tiny_guest_elf


def fake_bzimage(setup_sects=4, version=0x020F, xloadflags=1, body=b"KERNEL64"):
    img = bytearray(512 * (setup_sects + 1))
    img[0x1F1] = setup_sects
    struct.pack_into("<H", img, 0x1FE, 0xAA55)
    img[0x201] = 0x6A  # header length past 0x202
    struct.pack_into("<I", img, 0x202, 0x53726448)
    struct.pack_into("<H", img, 0x206, version)
    struct.pack_into("<H", img, 0x236, xloadflags)
    return bytes(img) + body


def test_elf_loader_places_segments(tmp_path):
    path = tmp_path / "vmlinux"
    path.write_bytes(tiny_guest_elf())
    k = loader.load_kernel(path)
    assert k.kind == "elf" and k.entry == LOAD_ADDR
    mem = GuestMemory(4 << 20)
    k.place(mem)
    assert mem.read(LOAD_ADDR, len(CODE)) == CODE


def test_bzimage_loader(tmp_path):
    path = tmp_path / "bzImage"
    path.write_bytes(fake_bzimage())
    k = loader.load_kernel(path)
    assert k.kind == "bzimage"
    assert k.entry == 0x100000 + 0x200
    assert k.segments[0][:2] == (0x100000, b"KERNEL64")
    assert k.setup_header[0] == 4 and len(k.setup_header) == 0x202 + 0x6A - 0x1F1


@pytest.mark.parametrize(
    "data,match",
    [
        (fake_bzimage(version=0x0206), "older than 2.12"),
        (fake_bzimage(xloadflags=0), "64-bit entry"),
        (b"MZ" + bytes(1000), "no bzImage setup header"),
        (b"\x7fELF" + bytes([1, 1]) + bytes(100), "64-bit ELF"),
    ],
    ids=["old-protocol", "no-64-bit", "garbage", "elf32"],
)
def test_bad_images(tmp_path, data, match):
    path = tmp_path / "kernel"
    path.write_bytes(data)
    with pytest.raises(KernelLoadError, match=match):
        loader.load_kernel(path)


def test_truncated_elf_segment():
    elf = bytearray(tiny_guest_elf())
    struct.pack_into("<Q", elf, 64 + 32, 1 << 30)  # p_filesz of the PT_LOAD
    with pytest.raises(KernelLoadError, match="truncated"):
        loader.parse_elf(bytes(elf))


def test_segment_that_does_not_fit_ram(tmp_path):
    k = loader.KernelImage("elf", 0, [(3 << 20, b"x" * 16, 2 << 20)])
    with pytest.raises(KernelLoadError, match="does not fit"):
        k.place(GuestMemory(4 << 20))


def test_missing_file(tmp_path):
    with pytest.raises(KernelLoadError, match="cannot read"):
        loader.load_kernel(tmp_path / "nope")


def test_libkrunfw_raw_image():
    k = loader.load_kernel(find_kernel(None).path)
    assert k.kind == "krunfw"
    load_addr, image, _ = k.segments[0]
    assert load_addr == 0x1000000 and k.entry == 0x1000123
    assert len(image) > 1 << 20
