"""Hostile layers: bombs (sparse, gzip), too many entries, too deep, oversized headers. Each pull fails with an
ImageError naming the limit it passed and leaves no build behind; trees of any depth never hit the recursion limit."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

import pytest
from _oci_testkit import Blob, Entry, image, layer, tar_bytes, write_oci_layout

from pytest_microsandbox._tree import remove_tree
from pytest_microsandbox.errors import ImageError, InvalidConfigError
from pytest_microsandbox.images import ImageCache, ImageLimits, pull_image
from pytest_microsandbox.images._meta import RootMeta
from pytest_microsandbox.images._rootdisk import _usage
from pytest_microsandbox.images._unpack import LayerUnpacker

GiB = 1 << 30

pytestmark = pytest.mark.timeout(120)  # a bomb must fail fast, never fill the disk for minutes


def pull_layer(tmp_path: Path, home: Path, blob: Blob, **kwargs: object):
    layout = write_oci_layout(tmp_path / "layout", {"latest": image([blob])})
    return pull_image(f"oci:{layout}", home=home, **kwargs)  # type: ignore[arg-type]


def assert_nothing_left(home: Path) -> None:
    images = home / "images"
    assert list((images / "tmp").iterdir()) == [] and list((images / "store").iterdir()) == []


def gzipped(raw: bytes) -> Blob:
    return Blob(gzip.compress(raw, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")


# -- sparse members -------------------------------------------------------------------------------------------
def old_gnu_sparse(name: str, real_size: int) -> bytes:
    """A tar holding one old-GNU sparse member ('S'): no data stored, ``real_size`` bytes of hole."""
    info = tarfile.TarInfo(name)
    header = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    header[156:157] = tarfile.GNUTYPE_SPARSE
    header[483:495] = f"{real_size:011o}\0".encode()  # realsize
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}\0 ".encode()
    return bytes(header) + b"\0" * 1024


def pax_sparse(name: str, real_size: int, version: str) -> bytes:
    """A tar holding one GNU sparse member in pax form (version 0.1: map in the header; 1.0: map in the data)."""
    if version == "0.1":
        pax = {"GNU.sparse.map": "0,0", "GNU.sparse.size": str(real_size), "GNU.sparse.name": name}
        return tar_bytes([Entry(f"GNUSparseFile.0/{name}", pax=pax)])
    pax = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": str(real_size),
           "GNU.sparse.name": name}
    return tar_bytes([Entry(f"GNUSparseFile.0/{name}", data=b"1\n0\n0\n".ljust(512, b"\0"), pax=pax)])


@pytest.mark.parametrize("variant", ["old-gnu", "pax-0.1", "pax-1.0"])
def test_sparse_bomb_is_refused(tmp_path, home, variant):
    raw = old_gnu_sparse("bomb", GiB) if variant == "old-gnu" else pax_sparse("bomb", GiB, variant[4:])
    blob = gzipped(raw)
    assert len(blob.data) < 400  # a few hundred bytes that used to become 1 GiB on disk
    with pytest.raises(ImageError, match="GNU sparse file: refused"):
        pull_layer(tmp_path, home, blob)
    assert_nothing_left(home)


# -- bytes ----------------------------------------------------------------------------------------------------
def test_gzip_bomb_stops_at_max_bytes_from_the_environment(tmp_path, home, monkeypatch):
    blob = layer([Entry("zeros", data=bytes(64 << 20))])
    assert len(blob.data) < 128 << 10  # 64 MiB from well under 128 KiB
    monkeypatch.setenv("MSB_IMAGE_MAX_BYTES", "8M")
    with pytest.raises(ImageError, match=r"'zeros'.*over the image limit max_bytes=8388608 .*MSB_IMAGE_MAX_BYTES"):
        pull_layer(tmp_path, home, blob)
    assert_nothing_left(home)


def test_bytes_in_members_nothing_extracts_are_counted_too(tmp_path, home):
    """Data of a member type nobody extracts is still decompressed: the stream itself is bounded."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("volume-label")
        info.type, info.size = b"V", 32 << 20  # a GNU volume header: carries nothing for a root
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    with pytest.raises(ImageError, match="decompressed layer data: over the image limit max_bytes=1048576"):
        pull_layer(tmp_path, home, gzipped(buf.getvalue()), limits=ImageLimits(max_bytes=1 << 20))
    assert_nothing_left(home)


def test_one_file_over_max_file_bytes(tmp_path, home):
    with pytest.raises(ImageError, match=r"'big' \(4096 bytes\): over the image limit max_file_bytes=4000"):
        pull_layer(tmp_path, home, layer([Entry("small", data=b"s"), Entry("big", data=bytes(4096))]),
                   limits=ImageLimits(max_file_bytes=4000))
    assert_nothing_left(home)


def test_compressed_layers_over_max_bytes_are_refused_before_download(tmp_path, home):
    blob = layer([Entry("f", data=os.urandom(64 << 10))])
    with pytest.raises(ImageError, match="compressed layers: over the image limit max_bytes"):
        pull_layer(tmp_path, home, blob, limits=ImageLimits(max_bytes=32 << 10))
    assert not (home / "images" / "blobs" / "sha256" / blob.digest.split(":")[1]).exists()


# -- entries and headers --------------------------------------------------------------------------------------
def test_too_many_entries(tmp_path, home, monkeypatch):
    monkeypatch.setenv("MSB_IMAGE_MAX_ENTRIES", "100")
    with pytest.raises(ImageError, match="layer entries: over the image limit max_entries=100 "):
        pull_layer(tmp_path, home, layer([Entry(f"f{n}", data=b"x") for n in range(101)]))
    assert_nothing_left(home)
    assert pull_layer(tmp_path / "ok", home, layer([Entry(f"f{n}", data=b"x") for n in range(100)])).disk.exists()


def test_oversized_pax_header_is_refused_before_it_is_read(tmp_path, home):
    blob = layer([Entry("f", data=b"x", pax={"comment": "c" * (2 << 20)})])
    with pytest.raises(ImageError, match="layer header of .* bytes"):
        pull_layer(tmp_path, home, blob)
    assert_nothing_left(home)


# -- depth ----------------------------------------------------------------------------------------------------
def test_a_layer_5000_levels_deep_is_refused_at_max_depth(tmp_path, home):
    blob = layer([Entry("a/" * n, "dir", mode=0o755) for n in range(1, 5001)] + [Entry("a/" * 5000 + "f")])
    with pytest.raises(ImageError, match="depth: over the image limit max_depth=256 .*MSB_IMAGE_MAX_DEPTH"):
        pull_layer(tmp_path, home, blob)
    assert_nothing_left(home)


def test_depth_counts_where_symlinks_lead(tmp_path, home):
    """200 names lexically, 400 once ``l`` (a symlink 200 levels down) is followed."""
    blob = layer([Entry("a/" * 200, "dir", mode=0o755), Entry("l", "symlink", target="a/" * 200),
                  Entry("l/" + "b/" * 199 + "f", data=b"x")])
    with pytest.raises(ImageError, match="over the image limit max_depth=256"):
        pull_layer(tmp_path, home, blob)
    assert_nothing_left(home)


def test_layers_5000_levels_deep_unpack_and_measure_without_recursion(tmp_path):
    """With the depth limit raised, nothing on the way recurses (the old code raised RecursionError)."""
    root = tmp_path / "rootfs"
    root.mkdir()
    deep = "a/" * 5000
    lower = layer([Entry("a/" * n, "dir", mode=0o755) for n in range(1, 5001)] + [Entry(deep + "f", data=b"x")])
    upper = layer([Entry("a/" * 2500 + ".wh.a"), Entry("b/" * 5000 + "g", data=b"y")])  # a whiteout, implied dirs
    try:
        with LayerUnpacker(root, RootMeta(), limits=ImageLimits(max_depth=10_000)) as unpacker:
            for blob in (lower, upper):
                unpacker.apply(io.BufferedReader(io.BytesIO(blob.data)))
        used, inodes = _usage(root)
        assert inodes == 1 + 2500 + 5001 and used > 0
    finally:
        remove_tree(root)  # pytest's own clean-up of old tmp_path trees recurses (shutil.rmtree)


def test_prune_removes_a_build_leftover_5000_levels_deep(home):
    cache = ImageCache(home)
    leftover = cache.tmp / f"{'ab' * 32}-crashed"
    leftover.mkdir()
    fd = os.open(leftover, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(5000):
        os.mkdir("d", dir_fd=fd)
        fd, old = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd), fd
        os.close(old)
    os.close(fd)
    cache.prune()
    assert list(cache.tmp.iterdir()) == []


# -- settings -------------------------------------------------------------------------------------------------
def test_limits_from_the_environment():
    limits = ImageLimits.from_env({"MSB_IMAGE_MAX_BYTES": "32G", "MSB_IMAGE_MAX_ENTRIES": "2000000",
                                   "MSB_IMAGE_MAX_DEPTH": "512", "MSB_IMAGE_MAX_FILE_BYTES": "1048576"})
    assert limits == ImageLimits(max_bytes=32 * GiB, max_entries=2_000_000, max_depth=512, max_file_bytes=1 << 20)
    assert ImageLimits.from_env({}) == ImageLimits()
    with pytest.raises(InvalidConfigError, match="MSB_IMAGE_MAX_DEPTH"):
        ImageLimits.from_env({"MSB_IMAGE_MAX_DEPTH": "deep"})
    with pytest.raises(InvalidConfigError, match="MSB_IMAGE_MAX_BYTES"):
        ImageLimits.from_env({"MSB_IMAGE_MAX_BYTES": "0"})
    with pytest.raises(InvalidConfigError, match="max_entries"):
        ImageLimits(max_entries=0)
