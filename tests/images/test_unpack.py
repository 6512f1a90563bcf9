"""Layer unpacking: whiteouts, ownership kept out of the host, and malicious entries that must not escape."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest
from _oci_testkit import Entry, layer

from pytest_microsandbox.errors import ImageError
from pytest_microsandbox.images._meta import RootMeta
from pytest_microsandbox.images._rootdisk import build_ext4
from pytest_microsandbox.images._unpack import LayerUnpacker


@pytest.fixture
def box(tmp_path: Path):
    """``tmp/outside/sentinel`` and ``tmp/outside/a/b/rootfs``: anything written around the root shows up."""
    outside = tmp_path / "outside"
    root = outside / "a" / "b" / "rootfs"
    root.mkdir(parents=True)
    (outside / "sentinel").write_text("keep")
    (outside / "a" / "sentinel").write_text("keep")
    return root


def _outside_listing(root: Path) -> list[str]:
    top = root.parents[2]
    return sorted(str(p.relative_to(top)) for p in top.rglob("*") if root not in (p, *p.parents))


def apply(root: Path, *layers: bytes, meta: RootMeta | None = None, allow_devices: bool = False) -> RootMeta:
    meta = meta or RootMeta()
    with LayerUnpacker(root, meta, allow_devices=allow_devices) as unpacker:
        for blob in layers:
            unpacker.apply(io.BufferedReader(io.BytesIO(blob)))
    return meta


@pytest.mark.parametrize("compression", [None, "gzip", "zstd"])
def test_layers_stack_with_whiteouts_and_opaque_dirs(box, compression):
    lower = layer([Entry("etc", "dir", mode=0o755), Entry("etc/a", data=b"a"), Entry("etc/b", data=b"b"),
                   Entry("var/lib/x", data=b"x"), Entry("var/lib/y", data=b"y"), Entry("keep", data=b"k")],
                  compression).data
    upper = layer([Entry("etc/.wh.a"), Entry("var/lib/.wh..wh..opq"), Entry("var/lib/new", data=b"n"),
                   Entry("keep", data=b"k2")], compression).data
    meta = apply(box, lower, upper)
    assert sorted(os.listdir(box / "etc")) == ["b"]
    assert sorted(os.listdir(box / "var/lib")) == ["new"]
    assert (box / "keep").read_bytes() == b"k2"
    assert "/etc/a" not in meta.entries and "/var/lib/x" not in meta.entries and "/var/lib/new" in meta.entries


def test_opaque_marker_after_same_layer_entries_keeps_them(box):
    apply(box, layer([Entry("d/old", data=b"o")]).data,
          layer([Entry("d/fresh", data=b"f"), Entry("d/.wh..wh..opq")]).data)
    assert os.listdir(box / "d") == ["fresh"]


def test_file_replaces_dir_and_symlink_replaces_file(box):
    apply(box, layer([Entry("x/inner", data=b"i"), Entry("y", data=b"y")]).data,
          layer([Entry("x", data=b"now a file"), Entry("y", "symlink", target="/x")]).data)
    assert (box / "x").read_bytes() == b"now a file"
    assert os.readlink(box / "y") == "/x"


def test_ownership_and_special_modes_stay_in_metadata_not_on_host(box, tmp_path):
    meta = apply(box, layer([Entry("bin/su", data=b"su", mode=0o4755, uid=0, gid=0),
                             Entry("home/u", "dir", mode=0o1777, uid=1000, gid=1000),
                             Entry("home/u/secret", data=b"s", mode=0o000, uid=1000, gid=1000,
                                   pax={"SCHILY.xattr.user.note": "hello"})]).data)
    su = os.lstat(box / "bin/su")
    assert not su.st_mode & (stat.S_ISUID | stat.S_ISGID)
    assert su.st_uid == os.getuid()
    secret = os.lstat(box / "home/u/secret")
    assert secret.st_uid == os.getuid() and secret.st_mode & 0o400  # readable by us, owned by us
    assert meta.entries["/bin/su"].mode == stat.S_IFREG | 0o4755
    assert (meta.entries["/home/u/secret"].uid, meta.entries["/home/u/secret"].mode) == (1000, stat.S_IFREG)
    assert meta.entries["/home/u/secret"].xattrs == {"user.note": b"hello"}
    disk = build_ext4(box, tmp_path / "root.ext4", meta)
    out = subprocess.run(["debugfs", "-R", "stat /bin/su", str(disk)], capture_output=True, text=True).stdout
    assert "Mode:  04755" in out
    out = subprocess.run(["debugfs", "-R", "stat /home/u/secret", str(disk)], capture_output=True, text=True).stdout
    assert "User:  1000   Group:  1000" in out and "Mode:  0000" in out
    out = subprocess.run(["debugfs", "-R", "ea_get /home/u/secret user.note", str(disk)],
                         capture_output=True, text=True).stdout
    assert "hello" in out


def test_device_nodes_skipped_unless_allowed_and_never_made_on_host(box, tmp_path):
    dev = layer([Entry("dev/null", "chr", mode=0o666, devmajor=1, devminor=3), Entry("dev/fifo", "fifo")]).data
    meta = apply(box, dev)
    assert not (box / "dev/null").exists() and "/dev/null" not in meta.entries
    assert stat.S_ISFIFO(os.lstat(box / "dev/fifo").st_mode)
    other = tmp_path / "other"
    other.mkdir()
    meta = apply(other, dev, allow_devices=True)
    assert not os.path.lexists(other / "dev/null")  # recorded only
    assert meta.entries["/dev/null"].rdev == (1, 3)
    disk = build_ext4(other, tmp_path / "dev.ext4", meta)
    out = subprocess.run(["debugfs", "-R", "stat /dev/null", str(disk)], capture_output=True, text=True).stdout
    assert "Type: character special" in out and "Device major/minor number: 01:03" in out


def test_dotdot_escape_is_refused_and_writes_nothing_outside(box):
    before = _outside_listing(box)
    with pytest.raises(ImageError, match="escapes the root"):
        apply(box, layer([Entry("../../etc/x", data=b"pwned")]).data)
    with pytest.raises(ImageError, match="escapes the root"):
        apply(box, layer([Entry("ok/../../../sentinel", data=b"pwned")]).data)
    assert _outside_listing(box) == before
    assert (box.parents[2] / "sentinel").read_text() == "keep"


def test_absolute_names_land_inside_the_root(box):
    name = f"msb-test-{uuid.uuid4().hex}"
    apply(box, layer([Entry(f"/{name}", data=b"abs"), Entry(f"/tmp/{name}", data=b"abs2")]).data)
    assert (box / name).read_bytes() == b"abs" and (box / "tmp" / name).read_bytes() == b"abs2"
    assert not os.path.lexists(f"/{name}") and not os.path.lexists(f"/tmp/{name}")


@pytest.mark.parametrize("link", ["/", "../../..", "/../../..", "."])
def test_symlink_then_write_through_it_stays_inside(box, link):
    name = f"msb-test-{uuid.uuid4().hex}"
    before = _outside_listing(box)
    apply(box, layer([Entry("a", "symlink", target=link), Entry(f"a/{name}", data=b"x"),
                      Entry(f"a/tmp/{name}", data=b"y")]).data)
    assert (box / name).read_bytes() == b"x" and (box / "tmp" / name).read_bytes() == b"y"
    assert os.readlink(box / "a") == link  # the link itself is kept, for the guest
    assert not os.path.lexists(f"/{name}") and not os.path.lexists(f"/tmp/{name}")
    assert _outside_listing(box) == before


def test_symlink_chain_and_loop(box):
    apply(box, layer([Entry("l1", "symlink", target="l2"), Entry("l2", "symlink", target="/real/../real"),
                      Entry("real", "dir", mode=0o755), Entry("l1/f", data=b"f")]).data)
    assert (box / "real/f").read_bytes() == b"f"
    with pytest.raises(ImageError, match="too many symlinks"):
        apply(box, layer([Entry("loop", "symlink", target="loop"), Entry("loop/f", data=b"f")]).data)


def test_hard_link_to_host_file_is_resolved_in_root(box):
    passwd = os.stat("/etc/passwd")
    with pytest.raises(ImageError, match="hard link"):
        apply(box, layer([Entry("pw", "hardlink", target="/etc/passwd")]).data)
    with pytest.raises(ImageError, match="hard link"):
        apply(box, layer([Entry("up", "symlink", target="/"),
                          Entry("pw2", "hardlink", target="../../etc/passwd")]).data)
    apply(box, layer([Entry("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
                      Entry("pw", "hardlink", target="/etc/passwd"),
                      Entry("a", "symlink", target="/"), Entry("a/pw3", "hardlink", target="a/etc/passwd")]).data)
    assert os.stat(box / "pw").st_ino == os.stat(box / "etc/passwd").st_ino != passwd.st_ino
    assert os.path.samefile(box / "pw3", box / "etc/passwd")
    assert os.stat("/etc/passwd").st_nlink == passwd.st_nlink


def test_whiteouts_cannot_reach_outside(box):
    before = _outside_listing(box)
    with pytest.raises(ImageError, match="whiteout"):
        apply(box, layer([Entry(".wh..."), Entry("x")]).data)
    with pytest.raises(ImageError, match="escapes the root"):
        apply(box, layer([Entry("../.wh.sentinel")]).data)
    # Through a symlink the whiteout is resolved in root: it removes the image's own entry.
    apply(box, layer([Entry("sentinel", data=b"inside"), Entry("up", "symlink", target="../../..")]).data,
          layer([Entry("up/.wh.sentinel"), Entry("up/up/.wh.b")]).data)
    assert not (box / "sentinel").exists()
    assert _outside_listing(box) == before
    assert (box.parents[2] / "sentinel").read_text() == "keep"


def test_corrupt_layer_data_is_an_image_error(box):
    with pytest.raises(ImageError, match="cannot unpack"):
        apply(box, b"\x1f\x8b" + b"not gzip at all" * 10)
    with pytest.raises(ImageError, match="cannot unpack"):
        apply(box, b"\x28\xb5\x2f\xfd" + b"\x00" * 64)


def test_directory_replaced_by_symlink_midway_is_followed_afterwards(box):
    # Resolved parents are cached between entries; replacing one must not leave writes going to the old place.
    apply(box, layer([Entry("d/x", data=b"1"), Entry("e", "dir", mode=0o755), Entry("d", "symlink", target="e"),
                      Entry("d/y", data=b"2")]).data,
          layer([Entry("e/z", data=b"3"), Entry("e", "symlink", target="/f"), Entry("e/w", data=b"4")]).data)
    assert os.readlink(box / "d") == "e" and os.readlink(box / "e") == "/f"
    assert sorted(os.listdir(box / "f")) == ["w"]  # e/y, e/z went with the directory e


def test_many_directories_stay_within_fd_budget(box):
    entries = [Entry(f"d{n}/f", data=b"x") for n in range(300)] + [Entry(f"d{n}/g", data=b"y") for n in range(300)]
    before = len(os.listdir("/proc/self/fd"))
    apply(box, layer(entries).data)
    assert len(os.listdir("/proc/self/fd")) == before
    assert len(os.listdir(box)) == 300 and (box / "d299/g").read_bytes() == b"y"


def test_directory_entry_again_updates_mode_and_owner_keeps_content(box):
    meta = apply(box, layer([Entry("srv", "dir", mode=0o755), Entry("srv/data", data=b"d")]).data,
                 layer([Entry("srv", "dir", mode=0o1777, uid=7, gid=8)]).data)
    assert (box / "srv/data").read_bytes() == b"d"
    assert os.lstat(box / "srv").st_mode & 0o777 == 0o777
    assert (meta.entries["/srv"].mode, meta.entries["/srv"].uid) == (stat.S_IFDIR | 0o1777, 7)


def test_awkward_names_still_get_their_ownership(box, tmp_path):
    names = ['say "hi"', "back\\slash", "tab\there", "caf\u00e9", "raw\udcff"]
    meta = apply(box, layer([Entry(f"d/{n}", data=b"x", uid=4242, gid=77, mode=0o640) for n in names]).data)
    disk = build_ext4(box, tmp_path / "names.ext4", meta)
    listing = subprocess.run(["debugfs", "-R", "ls -p /d", str(disk)], capture_output=True).stdout
    rows = [line.strip(b"/").split(b"/") for line in listing.splitlines() if line.count(b"/") == 7]
    owned = {fields[4]: (fields[1], fields[2], fields[3]) for fields in rows}
    for name in names:
        assert owned[os.fsencode(name)] == (b"100640", b"4242", b"77"), name
