"""VmdkImage against images made by qemu-img: guest bytes equal the raw source, refusals are clean."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess

import pytest

from _vmcore.devices.block_image import DiskError, UnsupportedImageError
from _vmcore.devices.vmdk import VmdkImage

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (qemu-utils) is not installed")

GRAIN = 64 * 1024  # qemu-img's grain: 128 sectors
SUBFORMATS = ["monolithicSparse", "streamOptimized"]
SIZES = [4 * 1024 * 1024, 5 * 1024 * 1024 + 37 * 512]  # the second ends in a partial grain
# SparseExtentHeader field offsets
VERSION, FLAGS, CAPACITY, GRAIN_SIZE, NUM_GTES, GD_OFFSET, OVERHEAD, COMPRESS = 4, 8, 12, 20, 44, 56, 64, 77
HEADER = struct.Struct("<IIIQQQQIQQQB4sH")


def raw_content(size: int) -> bytes:
    """Non-zero grains, all-zero grains, lone bytes at odd offsets, and a last byte."""
    rng = random.Random(size)
    b = bytearray(size)
    b[0:3 * GRAIN + 100] = rng.randbytes(3 * GRAIN + 100)  # data ending inside a grain
    b[GRAIN * 10 - 7:GRAIN * 10 + 9] = b"\xa5" * 16  # straddles a grain boundary
    for off in range(GRAIN * 20 + 1, min(size, GRAIN * 40), 4097):
        b[off] = off % 251 + 1
    b[size // 2 - 333:size // 2 + 333] = rng.randbytes(666)
    b[size - 1] = 0x7F
    return bytes(b)


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def make_vmdk(tmp_path, subformat: str, size: int = SIZES[1], *opts: str):
    raw = raw_content(size)
    src = tmp_path / "disk.raw"
    src.write_bytes(raw)
    out = tmp_path / f"disk-{subformat}.vmdk"
    options = ",".join([f"subformat={subformat}", *opts])
    qemu_img("convert", "-f", "raw", "-O", "vmdk", "-o", options, str(src), str(out))
    return out, raw


def patch(path, fmt: str, offset: int, *values) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<" + fmt, *values))


def header(path, offset: int = 0) -> tuple:
    with open(path, "rb") as f:
        f.seek(offset)
        return HEADER.unpack(f.read(HEADER.size))


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def refused(path, exc=DiskError, **kw) -> Exception:
    before = open_fds()
    with pytest.raises(exc) as info:
        VmdkImage(path, **kw)
    assert open_fds() == before, "the image fd leaked"
    assert str(path) in str(info.value)
    return info.value


def check_reads(img: VmdkImage, raw: bytes) -> None:
    assert img.size == len(raw)
    assert img.read(0, len(raw)) == raw
    edges = [GRAIN - 1, GRAIN, 3 * GRAIN + 99, 10 * GRAIN - 8, len(raw) // 2 - 334, len(raw) - GRAIN - 3]
    for off in edges:
        for n in (1, 2, 511, 513, GRAIN + 3, 2 * GRAIN + 1001):
            n = min(n, len(raw) - off)
            assert img.read(off, n) == raw[off:off + n], (off, n)
    rng = random.Random(1)
    for _ in range(200):
        off = rng.randrange(len(raw))
        n = rng.randrange(min(3 * GRAIN, len(raw) - off) + 1)
        assert img.read(off, n) == raw[off:off + n], (off, n)
    assert img.read(len(raw) - 1, 1) == b"\x7f"
    assert img.read(len(raw), 0) == b""


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("subformat", SUBFORMATS)
def test_reads_match_raw(tmp_path, subformat, size):
    path, raw = make_vmdk(tmp_path, subformat, size)
    with VmdkImage(path) as img:
        assert (img.format, img.read_only, img.create_type) == ("vmdk", True, subformat)
        check_reads(img, raw)
        with pytest.raises(OSError) as info:
            img.write(0, b"x")
        assert info.value.errno == 30


def test_zeroed_grain_entries_read_as_zeros(tmp_path):
    if shutil.which("qemu-io") is None:
        pytest.skip("qemu-io is not installed")
    path, raw = make_vmdk(tmp_path, "monolithicSparse", SIZES[1], "zeroed_grain=on")
    subprocess.run(["qemu-io", "-f", "vmdk", "-c", f"write -z 0 {2 * GRAIN}", str(path)], check=True,
                   capture_output=True)
    assert header(path)[2] & 0x4 and first_grain_sector(path) == 1
    with VmdkImage(path) as img:
        check_reads(img, bytes(2 * GRAIN) + raw[2 * GRAIN:])


def vmware_stream(path) -> None:
    """Rewrite qemu's streamOptimized file (GD in the header area) into VMware's layout: GD after the grains
    behind a GD marker, header gdOffset = GD_AT_END, then footer marker, footer (the real header), EOS marker."""
    data = bytearray(path.read_bytes())
    data += bytes(-len(data) % 512)
    h = list(HEADER.unpack_from(data))
    n = -(-h[3] // (h[7] * h[4]))
    gd_at = h[9] * 512
    gd = bytes(data[gd_at:gd_at + 4 * n])
    data[gd_at:gd_at + 4 * n] = bytes(4 * n)  # the old copy must not be what gets read
    gd_sectors = -(-len(gd) // 512)
    data += struct.pack("<QII", gd_sectors, 0, 2).ljust(512, b"\0")
    h[9] = len(data) // 512
    data += gd.ljust(gd_sectors * 512, b"\0")
    data += struct.pack("<QII", 1, 0, 3).ljust(512, b"\0")
    data += HEADER.pack(*h).ljust(512, b"\0")
    data += bytes(512)
    struct.pack_into("<Q", data, GD_OFFSET, 0xFFFFFFFFFFFFFFFF)
    path.write_bytes(bytes(data))


def test_stream_optimized_with_footer(tmp_path):
    path, raw = make_vmdk(tmp_path, "streamOptimized")
    vmware_stream(path)
    with VmdkImage(path) as img:
        check_reads(img, raw)
    os.truncate(path, path.stat().st_size - 512)  # the EOS marker is gone: the footer cannot be found
    assert "footer" in str(refused(path))


def test_refuses_writable_open(tmp_path):
    path, _ = make_vmdk(tmp_path, "monolithicSparse")
    err = refused(path, UnsupportedImageError, read_only=False)
    assert "read-only" in str(err)


@pytest.mark.parametrize("subformat", ["monolithicFlat", "twoGbMaxExtentSparse"])
def test_refuses_descriptor_files(tmp_path, subformat):
    path, _ = make_vmdk(tmp_path, subformat)
    assert subformat in str(refused(path, UnsupportedImageError))


def test_refuses_a_parent_link(tmp_path):
    base, _ = make_vmdk(tmp_path, "monolithicSparse")
    child = tmp_path / "child.vmdk"
    qemu_img("create", "-f", "vmdk", "-b", str(base), "-F", "vmdk", str(child))
    assert "parent" in str(refused(child, UnsupportedImageError))


@pytest.mark.parametrize(("fmt", "offset", "value", "exc"), [
    ("I", VERSION, 4, UnsupportedImageError),
    ("H", COMPRESS, 2, UnsupportedImageError),
])
def test_refuses_unknown_versions_and_compression(tmp_path, fmt, offset, value, exc):
    path, _ = make_vmdk(tmp_path, "streamOptimized")
    patch(path, fmt, offset, value)
    refused(path, exc)


@pytest.mark.parametrize(("fmt", "offset", "value", "what"), [
    ("4s", 0, b"KDMW", "magic"),
    ("Q", GRAIN_SIZE, 0, "grain size"),
    ("Q", GRAIN_SIZE, 96, "grain size"),
    ("Q", GRAIN_SIZE, 1 << 40, "grain size"),
    ("Q", CAPACITY, 0, "capacity"),
    ("Q", CAPACITY, 1 << 60, "capacity"),
    ("Q", CAPACITY, 1 << 36, "extent"),  # legal, but not what the descriptor says
    ("I", NUM_GTES, 0, "grain table"),
    ("I", NUM_GTES, 1 << 20, "grain table"),
    ("Q", GD_OFFSET, 1 << 50, "grain directory"),
    ("Q", OVERHEAD, 1 << 30, "truncated"),
    ("4s", 73, b"\n \n\n", "newline"),
])
@pytest.mark.parametrize("subformat", SUBFORMATS)
def test_refuses_corrupt_headers(tmp_path, subformat, fmt, offset, value, what):
    path, _ = make_vmdk(tmp_path, subformat)
    patch(path, fmt, offset, value)
    err = refused(path)
    assert not isinstance(err, UnsupportedImageError)
    assert what in str(err)


def test_refuses_grain_table_outside_the_file(tmp_path):
    path, _ = make_vmdk(tmp_path, "monolithicSparse")
    patch(path, "I", header(path)[9] * 512, 0xFFFFFF00)
    assert "grain table" in str(refused(path))


@pytest.mark.parametrize("subformat", SUBFORMATS)
@pytest.mark.parametrize("keep", [0, 3, 511, 4096])
def test_refuses_truncated_files(tmp_path, subformat, keep):
    path, _ = make_vmdk(tmp_path, subformat)
    os.truncate(path, keep)
    refused(path)


def test_truncated_grains_read_as_eio(tmp_path):
    path, raw = make_vmdk(tmp_path, "monolithicSparse")
    overhead = header(path)[10] * 512
    os.truncate(path, overhead + GRAIN // 2)  # the metadata is whole, the first grain is cut
    with VmdkImage(path) as img:
        assert img.read(0, 4096) == raw[:4096]
        with pytest.raises(OSError) as info:
            img.read(GRAIN - 512, 1024)
        assert info.value.errno == 5


def first_grain_sector(path) -> int:
    h = header(path)
    data = path.read_bytes()
    gt = struct.unpack_from("<I", data, h[9] * 512)[0]
    return struct.unpack_from("<I", data, gt * 512)[0]


@pytest.mark.parametrize(("fmt", "delta", "value"), [
    ("Q", 0, 128),  # marker lba: not this grain's
    ("I", 8, 0),  # marker size 0
    ("I", 8, 1 << 30),  # marker size far beyond a grain
    ("4s", 40, b"\xde\xad\xbe\xef"),  # damaged deflate data
    ("I", 8, 20),  # a stream cut short
])
def test_corrupt_compressed_grains_read_as_eio(tmp_path, fmt, delta, value):
    path, raw = make_vmdk(tmp_path, "streamOptimized")
    patch(path, fmt, first_grain_sector(path) * 512 + delta, value)
    with VmdkImage(path) as img:
        assert img.read(GRAIN + 100, 4096) == raw[GRAIN + 100:GRAIN + 4196]  # other grains still read
        for _ in range(2):  # a failed grain is not cached as good
            with pytest.raises(OSError) as info:
                img.read(100, 10)
            assert info.value.errno == 5


def rewrite_descriptor(path, edit) -> None:
    h = header(path)
    text = path.read_bytes()[h[5] * 512:(h[5] + h[6]) * 512].split(b"\0", 1)[0].decode()
    new = edit(text).encode()
    assert len(new) <= h[6] * 512
    patch(path, f"{h[6] * 512}s", h[5] * 512, new)


EXTENT = f"RW {SIZES[1] // 512} SPARSE"  # make_vmdk's default size


def extra_extent(text: str) -> str:
    line = next(x for x in text.splitlines() if x.startswith("RW "))
    return text.replace(line, f"{line}\n{line}")


@pytest.mark.parametrize(("edit", "exc", "what"), [
    (extra_extent, UnsupportedImageError, "2 extents"),
    (lambda t: t.replace("monolithicSparse", "vmfsSparse"), UnsupportedImageError, "vmfsSparse"),
    (lambda t: t.replace(EXTENT, "RW " + "9" * 5000 + " SPARSE"), UnsupportedImageError, "0 extents"),
    (lambda t: t.replace(EXTENT, EXTENT.replace("SPARSE", "FLAT")), UnsupportedImageError, "FLAT"),
    (lambda t: t.replace("parentCID=ffffffff", "parentCID=1234abcd"), UnsupportedImageError, "parent"),
    (lambda t: t.replace("createType", "kind"), DiskError, "createType"),
    (lambda t: t.replace("monolithicSparse", "streamOptimized"), DiskError, "compression"),
])
def test_refuses_descriptors(tmp_path, edit, exc, what):
    path, _ = make_vmdk(tmp_path, "monolithicSparse")
    rewrite_descriptor(path, edit)
    err = refused(path, exc)
    assert what in str(err)
    assert exc is UnsupportedImageError or not isinstance(err, UnsupportedImageError)
