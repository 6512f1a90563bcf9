"""qcow2 images read and written by our block layer, checked against qemu-img's own reading and ``qemu-img check``."""

from __future__ import annotations

import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from _vmcore.devices.block_image import DiskError, UnsupportedImageError
from _vmcore.devices.disk_images import open_image

pytestmark = pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img (Debian's qemu-utils) is missing")
SIZE = 4 << 20


def qemu_img(*args: str) -> str:
    return subprocess.run(["qemu-img", *args], check=True, capture_output=True, text=True).stdout


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def content(tmp_path: Path) -> bytes:
    """Random runs over zeros (so some clusters are unallocated), ending at an unaligned offset."""
    rng = random.Random(7)
    raw = bytearray(SIZE)
    for _ in range(30):
        at, n = rng.randrange(SIZE - 70_000), rng.randrange(1, 70_000)
        raw[at:at + n] = rng.randbytes(n)
    raw[-5:] = b"tail!"
    (tmp_path / "content.raw").write_bytes(raw)
    return bytes(raw)


def converted(tmp_path: Path, name: str, *options: str) -> Path:
    out = tmp_path / name
    qemu_img("convert", "-f", "raw", "-O", "qcow2", *options, str(tmp_path / "content.raw"), str(out))
    return out


def as_raw(path: Path) -> bytes:
    out = path.with_suffix(".check.raw")
    qemu_img("convert", "-O", "raw", str(path), str(out))
    return out.read_bytes()


def scribble(image, base: bytes, seed: int, writes: int = 200) -> bytes:
    """Random writes of up to two clusters at unaligned offsets; returns what the disk must now hold."""
    rng = random.Random(seed)
    expected = bytearray(base)
    for _ in range(writes):
        at, n = rng.randrange(SIZE - 140_000), rng.randrange(1, 140_000)
        data = rng.randbytes(n)
        expected[at:at + n] = data
        image.write(at, data)
    image.write(SIZE - 3, b"end")
    expected[-3:] = b"end"
    return bytes(expected)


@pytest.mark.parametrize("options", [(), ("-c",), ("-o", "compat=0.10"), ("-o", "cluster_size=4096")],
                         ids=["v3", "compressed", "v2", "4k-clusters"])
def test_reads_what_qemu_wrote(tmp_path: Path, content: bytes, options: tuple[str, ...]) -> None:
    with open_image(converted(tmp_path, "disk.qcow2", *options), "qcow2", read_only=True) as image:
        assert image.size == SIZE
        assert image.read(0, SIZE) == content
        assert image.read(65_000, 70_000) == content[65_000:135_000]  # across cluster boundaries


@pytest.mark.parametrize("options", [(), ("-c",), ("-o", "compat=0.10"), ("-o", "cluster_size=512"),
                                     ("-o", "preallocation=metadata")],
                         ids=["v3", "compressed", "v2", "512-byte-clusters", "preallocated"])
def test_writes_read_back_and_qemu_img_check_is_clean(tmp_path: Path, content: bytes, options: tuple[str, ...]) -> None:
    path = converted(tmp_path, "disk.qcow2", *options)
    with open_image(path, "qcow2") as image:
        expected = scribble(image, content, seed=len(options))
        assert image.read(0, SIZE) == expected
        image.sync()
    check = subprocess.run(["qemu-img", "check", str(path)], capture_output=True, text=True)
    assert check.returncode == 0 and "No errors were found" in check.stdout, check.stdout + check.stderr
    assert as_raw(path) == expected


def test_the_refcount_table_grows_when_the_image_outgrows_it(tmp_path: Path) -> None:
    """512-byte clusters: one refcount-table cluster covers 64 blocks of 256 clusters (8 MiB); filling 12 MiB
    moves the table to a larger one."""
    path = tmp_path / "small.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=512", str(path), "16M")
    before = struct.unpack(">QI", path.read_bytes()[48:60])
    with open_image(path, "qcow2") as image:
        data = random.Random(1).randbytes(12 << 20)
        image.write(0, data)
    after = struct.unpack(">QI", path.read_bytes()[48:60])
    assert after != before and after[1] > before[1]
    check = subprocess.run(["qemu-img", "check", str(path)], capture_output=True, text=True)
    assert check.returncode == 0 and "No errors were found" in check.stdout, check.stdout
    assert as_raw(path)[:12 << 20] == data


def test_backing_chain_reads_through_and_writes_stay_on_top(tmp_path: Path, content: bytes) -> None:
    base = converted(tmp_path, "base.qcow2", "-c")
    middle, top = tmp_path / "middle.qcow2", tmp_path / "top.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", str(middle))
    qemu_img("create", "-q", "-f", "qcow2", "-b", "middle.qcow2", "-F", "qcow2", str(top))
    base_bytes = base.read_bytes()
    with open_image(top, "qcow2") as image:
        assert image.read(0, SIZE) == content
        expected = scribble(image, content, seed=3)
    assert base.read_bytes() == base_bytes
    assert subprocess.run(["qemu-img", "check", str(top)], capture_output=True).returncode == 0
    assert as_raw(top) == expected


def test_zero_clusters_read_as_zeros_and_take_writes(tmp_path: Path) -> None:
    path = tmp_path / "zero.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(path), "4M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 9 0 4M", "-c", "write -z 1M 1M", str(path)],
                   check=True, capture_output=True)
    with open_image(path, "qcow2") as image:
        assert image.read(1 << 20, 1 << 20) == bytes(1 << 20)
        image.write((1 << 20) + 100, b"x")
        assert image.read(1 << 20, 101) == bytes(100) + b"x"
        assert image.read(0, 1 << 20) == b"\x09" * (1 << 20)
    assert subprocess.run(["qemu-img", "check", str(path)], capture_output=True).returncode == 0


def _refused(path: Path, match: str, read_only: bool = False, error: type[Exception] = UnsupportedImageError) -> None:
    fds = open_fds()
    with pytest.raises(error, match=match):
        open_image(path, "qcow2", read_only=read_only)
    assert open_fds() == fds


def test_unsupported_features_are_refused_by_name(tmp_path: Path) -> None:
    encrypted = tmp_path / "enc.qcow2"
    try:
        qemu_img("create", "-q", "--object", "secret,id=s0,data=pw", "-f", "qcow2", "-o",
                 "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", str(encrypted), "1M")
    except subprocess.CalledProcessError:  # its key setup times the CPU and refuses where it cannot: say LUKS
        qemu_img("create", "-q", "-f", "qcow2", str(encrypted), "1M")
        header = encrypted.read_bytes()
        encrypted.write_bytes(header[:32] + struct.pack(">I", 2) + header[36:])
    _refused(encrypted, "encrypted")
    external = tmp_path / "ext.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'ext.data'}", str(external), "1M")
    _refused(external, "external data file")
    extended = tmp_path / "extl2.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "extended_l2=on", str(extended), "1M")
    _refused(extended, "subclusters")
    snap = tmp_path / "snap.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(snap), "1M")
    qemu_img("snapshot", "-c", "one", str(snap))
    _refused(snap, "internal snapshots")
    open_image(snap, "qcow2", read_only=True).close()  # read-only is fine
    dirty = tmp_path / "dirty.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(dirty), "1M")
    with open(dirty, "r+b") as f:
        f.seek(72)
        f.write(struct.pack(">Q", 1))
    _refused(dirty, "dirty")


def test_a_backing_file_outside_the_image_directory_is_never_opened(tmp_path: Path) -> None:
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"host secret".ljust(1 << 20, b"\0"))
    inner = tmp_path / "images"
    inner.mkdir()
    for name, backing in (("abs.qcow2", str(secret)), ("rel.qcow2", "../secret.raw")):
        qemu_img("create", "-q", "-f", "qcow2", "-b", backing, "-F", "raw", str(inner / name))
        _refused(inner / name, "outside the image's directory")


def test_hostile_headers_are_corrupt_images_and_leak_nothing(tmp_path: Path) -> None:
    good = tmp_path / "good.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(good), "1M")
    header = good.read_bytes()
    cases = {
        "cluster_bits": (20, struct.pack(">I", 40)),
        "L1 table": (36, struct.pack(">I", 0xFFFFFFF)),
        "refcount table": (56, struct.pack(">I", 0xFFFFFF)),
        "header": (0, b"QFI\x00"),
    }
    for what, (at, patch) in cases.items():
        bad = tmp_path / f"bad-{at}.qcow2"
        bad.write_bytes(header[:at] + patch + header[at + len(patch):])
        _refused(bad, "corrupt", error=DiskError)
        assert what  # named for the reader
    truncated = tmp_path / "short.qcow2"
    truncated.write_bytes(header[:40])
    _refused(truncated, "corrupt", error=DiskError)


def test_reads_never_leave_the_file_an_l2_entry_points_past(tmp_path: Path) -> None:
    """An L2 entry pointing past the end of the file is an I/O error for that read, not zeros or a crash."""
    path = tmp_path / "lying.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(path), "1M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 64k", str(path)], check=True, capture_output=True)
    data = bytearray(path.read_bytes())
    l1_offset = struct.unpack_from(">Q", data, 40)[0]
    l2_offset = struct.unpack_from(">Q", data, l1_offset)[0] & 0x00FFFFFFFFFFFE00
    struct.pack_into(">Q", data, l2_offset, (1 << 63) | (1 << 40))
    path.write_bytes(data)
    with open_image(path, "qcow2", read_only=True) as image, pytest.raises(OSError):
        image.read(0, 512)


def test_compressed_clusters_far_into_the_file_read_and_rewrite(tmp_path: Path) -> None:
    """Compressed-cluster offsets use up to 54 bits: clusters stored past 4 MiB must read, and rewriting them must
    release the right clusters (``qemu-img check`` clean)."""
    rng = random.Random(1)
    raw = b"".join(rng.randbytes(40_000) + bytes(25_536) for _ in range(256))
    (tmp_path / "content.raw").write_bytes(raw)
    path = converted(tmp_path, "big.qcow2", "-c")
    assert path.stat().st_size > 8 << 20
    expected = bytearray(raw)
    with open_image(path, "qcow2") as image:
        assert image.read(0, len(raw)) == raw
        for cluster in (150, 200, 255):
            image.write(cluster * 65536, b"A" * 65536)
            expected[cluster * 65536:(cluster + 1) * 65536] = b"A" * 65536
        image.write(201 * 65536 + 7, b"partial")
        expected[201 * 65536 + 7:201 * 65536 + 14] = b"partial"
    check = subprocess.run(["qemu-img", "check", str(path)], capture_output=True, text=True)
    assert check.returncode == 0 and "No errors were found" in check.stdout, check.stdout
    assert as_raw(path) == expected


def _header_field(path: Path, offset: int, fmt: str) -> int:
    return struct.unpack_from(fmt, path.read_bytes(), offset)[0]


def test_metadata_a_hostile_image_points_anywhere_is_refused_before_any_write(tmp_path: Path) -> None:
    path = tmp_path / "bad-reftable.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(path), "1M")
    data = bytearray(path.read_bytes())
    rt_offset = _header_field(path, 48, ">Q")
    struct.pack_into(">Q", data, rt_offset, (1 << 63) | struct.unpack_from(">Q", data, rt_offset)[0])
    path.write_bytes(data)
    _refused(path, "overlaps other metadata|outside the file", error=DiskError)
    open_image(path, "qcow2", read_only=True).close()  # reading needs no refcounts


def test_an_l2_entry_aimed_at_metadata_never_gets_a_write(tmp_path: Path) -> None:
    path = tmp_path / "aimed.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(path), "1M")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 1 0 128k", str(path)], check=True, capture_output=True)
    data = bytearray(path.read_bytes())
    l1_offset = _header_field(path, 40, ">Q")
    l2_offset = struct.unpack_from(">Q", data, l1_offset)[0] & 0x00FFFFFFFFFFFE00
    struct.pack_into(">Q", data, l2_offset, (1 << 63) | l1_offset)          # cluster 0 "is" the L1 table
    struct.pack_into(">Q", data, l2_offset + 8, (1 << 63) | (1 << 43))      # cluster 1 lies 8 TiB out
    path.write_bytes(data)
    before = path.read_bytes()
    with open_image(path, "qcow2") as image:
        for at in (0, 65536):
            with pytest.raises(OSError):
                image.write(at, b"guest data")
    assert path.read_bytes() == before


def test_backing_chains_that_loop_or_do_not_name_their_format_are_refused(tmp_path: Path) -> None:
    a, b = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", str(b), "1M")
    qemu_img("create", "-q", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", str(a))
    qemu_img("rebase", "-u", "-f", "qcow2", "-b", "a.qcow2", "-F", "qcow2", str(b))
    _refused(a, "loops", read_only=True)
    guessed = tmp_path / "guessed.qcow2"
    (tmp_path / "plain.raw").write_bytes(bytes(1 << 20))
    qemu_img("create", "-q", "-f", "qcow2", "-b", "plain.raw", "-F", "raw", str(guessed))
    header = guessed.read_bytes()
    recorded = header.index(struct.pack(">I", 0xE2792ACA))  # the backing format extension becomes an unknown one
    guessed.write_bytes(header[:recorded] + struct.pack(">I", 0x12345678) + header[recorded + 4:])
    _refused(guessed, "not recorded", read_only=True)


def test_a_refused_open_leaves_the_image_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "narrow.qcow2"
    qemu_img("create", "-q", "-f", "qcow2", "-o", "refcount_bits=8", str(path), "1M")
    data = bytearray(path.read_bytes())
    struct.pack_into(">Q", data, 88, 1)  # an autoclear bit a writer would clear
    path.write_bytes(data)
    _refused(path, "8-bit refcounts")
    assert path.read_bytes() == data
