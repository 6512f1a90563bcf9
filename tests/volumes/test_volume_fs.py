"""VolumeFs on well-behaved paths: each method does what it says, on the real filesystem."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pytest_microsandbox.sync import FsEntryKind, VolumeFs


@pytest.fixture(params=["openat2", "walk"])
def fs(tmp_path: Path, request: pytest.FixtureRequest) -> VolumeFs:
    root = tmp_path / "vol"
    root.mkdir()
    return VolumeFs(root, use_openat2=request.param == "openat2")


def test_write_creates_parents_with_0644(fs: VolumeFs) -> None:
    fs.write("a/b/c.txt", b"hello")
    path = Path(fs.root, "a/b/c.txt")
    assert path.read_bytes() == b"hello"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~_umask()
    assert fs.read("a/b/c.txt") == b"hello"
    assert fs.read_text("a/b/c.txt") == "hello"


def test_write_replaces_and_truncates(fs: VolumeFs) -> None:
    fs.write("f", b"a long first version")
    fs.write("f", b"short")
    assert fs.read("f") == b"short"


def test_large_file_round_trip(fs: VolumeFs) -> None:
    data = os.urandom(3 << 20)
    fs.write("big.bin", data)
    assert fs.read("big.bin") == data


def test_list_entries(fs: VolumeFs) -> None:
    fs.write("d/x.txt", b"12345")
    fs.mkdir("d/sub")
    os.symlink("x.txt", Path(fs.root, "d/link"))
    entries = fs.list("d")
    assert [(e.path, e.kind) for e in entries] == [
        ("d/link", FsEntryKind.SYMLINK),
        ("d/sub", FsEntryKind.DIRECTORY),
        ("d/x.txt", FsEntryKind.FILE),
    ]
    x = entries[2]
    assert x.size == 5 and x.mode == 0o644 & ~_umask() and x.modified and x.modified > 0
    assert [e.path for e in fs.list("")] == ["d"]
    assert [e.path for e in fs.list(".")] == ["d"]


def test_list_of_a_file_fails(fs: VolumeFs) -> None:
    fs.write("f", b"")
    with pytest.raises(NotADirectoryError):
        fs.list("f")


def test_mkdir_is_recursive_and_idempotent(fs: VolumeFs) -> None:
    fs.mkdir("x/y/z")
    fs.mkdir("x/y/z")
    assert Path(fs.root, "x/y/z").is_dir()


def test_mkdir_over_a_file_fails(fs: VolumeFs) -> None:
    fs.write("x", b"")
    with pytest.raises(NotADirectoryError):
        fs.mkdir("x/y")


def test_exists_and_stat(fs: VolumeFs) -> None:
    assert not fs.exists("nope")
    fs.write("dir/f", b"abc")
    assert fs.exists("dir/f") and fs.exists("dir") and fs.exists("")
    meta = fs.stat("dir/f")
    assert meta.kind == FsEntryKind.FILE and meta.size == 3 and not meta.readonly
    os.chmod(Path(fs.root, "dir/f"), 0o444)
    assert fs.stat("dir/f").readonly
    assert fs.stat("").kind == FsEntryKind.DIRECTORY
    with pytest.raises(FileNotFoundError):
        fs.stat("missing")


def test_remove_file_and_dir(fs: VolumeFs) -> None:
    fs.write("d/e/f.txt", b"x")
    fs.write("g.txt", b"x")
    fs.remove_file("g.txt")
    assert not fs.exists("g.txt")
    with pytest.raises(IsADirectoryError):
        fs.remove_file("d")
    with pytest.raises(NotADirectoryError):
        fs.remove_dir("d/e/f.txt")
    fs.remove_dir("d")
    assert fs.list("") == []
    with pytest.raises(FileNotFoundError):
        fs.remove_file("g.txt")


def test_rename(fs: VolumeFs) -> None:
    fs.write("a.txt", b"A")
    fs.mkdir("sub")
    fs.rename("a.txt", "sub/b.txt")
    assert fs.read("sub/b.txt") == b"A" and not fs.exists("a.txt")
    fs.write("c.txt", b"C")
    fs.rename("c.txt", "sub/b.txt")  # replaces, as rename(2) does
    assert fs.read("sub/b.txt") == b"C"
    with pytest.raises(FileNotFoundError):
        fs.rename("c.txt", "d.txt")


def test_copy_keeps_mode(fs: VolumeFs) -> None:
    fs.write("tool.sh", b"#!/bin/sh\necho hi\n")
    os.chmod(Path(fs.root, "tool.sh"), 0o755)
    fs.copy("tool.sh", "bin/tool.sh")
    assert fs.read("bin/tool.sh") == b"#!/bin/sh\necho hi\n"
    assert fs.stat("bin/tool.sh").mode == 0o755
    with pytest.raises(IsADirectoryError):
        fs.copy("bin", "bin2")


def test_write_refuses_non_bytes(fs: VolumeFs) -> None:
    with pytest.raises(TypeError):
        fs.write("x", "text")  # type: ignore[arg-type]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_copy_onto_itself_or_a_hard_link_keeps_the_data(fs: VolumeFs) -> None:
    fs.write("a", b"hello")
    fs.copy("a", "a")
    assert fs.read("a") == b"hello"
    os.link(Path(fs.root, "a"), Path(fs.root, "b"))
    fs.copy("a", "b")
    assert fs.read("a") == fs.read("b") == b"hello"


def test_fifos_and_other_non_files_are_refused_not_waited_on(fs: VolumeFs) -> None:
    from pytest_microsandbox.errors import InvalidConfigError

    os.mkfifo(Path(fs.root, "pipe"))  # as a guest could make one in a shared volume
    for call in (lambda: fs.read("pipe"), lambda: fs.copy("pipe", "q"), lambda: fs.write("pipe", b"x")):
        with pytest.raises(InvalidConfigError, match="not a regular file"):
            call()


def test_bad_path_types_are_typed_errors(fs: VolumeFs) -> None:
    from pytest_microsandbox.errors import InvalidConfigError

    with pytest.raises(InvalidConfigError):
        fs.read(3)  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigError):
        fs.read("a\0b")


def test_a_name_that_is_not_utf8_round_trips_as_listed(fs: VolumeFs) -> None:
    """A guest can make any bytes a name: the name ``list`` gives back (a surrogate escape) reads, writes and
    removes that file."""
    raw = b"caf\xe9-\xff.txt"
    with open(os.path.join(os.fsencode(fs.root), raw), "wb") as f:
        f.write(b"latin-1")
    [entry] = fs.list("")
    assert os.fsencode(entry.path) == raw
    assert fs.read(entry.path) == b"latin-1"
    fs.write(entry.path, b"replaced")
    fs.copy(entry.path, "copy.txt")
    assert fs.stat(entry.path).size == 8 and fs.exists(entry.path)
    fs.remove_file(entry.path)
    assert [e.path for e in fs.list("")] == ["copy.txt"]


def test_a_character_no_file_name_can_hold_is_a_typed_error(fs: VolumeFs) -> None:
    from pytest_microsandbox.errors import InvalidConfigError

    for call in (lambda: fs.read("lone-\ud800"), lambda: fs.write("\udfff", b"x"), lambda: fs.mkdir("a/\ud83d")):
        with pytest.raises(InvalidConfigError, match="no file name"):
            call()


def test_a_hard_link_to_a_file_outside_is_replaced_never_written_through(fs: VolumeFs, tmp_path: Path) -> None:
    outside = tmp_path / "host-secret"
    outside.write_bytes(b"host data")
    os.link(outside, Path(fs.root, "linked"))  # made on the host, by someone who could
    os.link(outside, Path(fs.root, "linked-too"))
    fs.write("linked", b"guest data")
    fs.write("src", b"copied")
    fs.copy("src", "linked-too")
    assert outside.read_bytes() == b"host data" and outside.stat().st_nlink == 1
    assert fs.read("linked") == b"guest data" and fs.read("linked-too") == b"copied"
