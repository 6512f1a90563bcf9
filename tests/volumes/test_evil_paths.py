"""Evil paths against every VolumeFs method, with both resolvers (openat2 and the O_NOFOLLOW walk).

Sentinel files live next to the volume root; after each attempt they must be exactly as before, and nothing new may
appear outside the root.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from _vmcore import beneath
from pytest_microsandbox.errors import InvalidConfigError, PathEscapeError
from pytest_microsandbox.volumes._fs import VolumeFs

SENTINEL = b"sentinel: must never change"

# (name, path) pairs: each must fail, and fail without touching anything outside the root.
EVIL_PATHS = [
    ("dotdot", "../outside.txt"),
    ("dotdot-dir", "../outside-dir"),
    ("dotdot-deep", "../../../../../../etc/passwd"),
    ("missing-then-up", "missing/../../../outside.txt"),
    ("dir-then-up", "inner/../../outside.txt"),
    ("dot-dotdot", "./../outside.txt"),
    ("abs-passwd", "/etc/passwd"),
    ("abs-sentinel", "/outside.txt"),
    ("abs-root", "/"),
    ("double-slash-abs", "//etc/passwd"),
    ("link-to-outside-file", "link-out-file"),
    ("link-to-outside-dir", "link-out-dir/new.txt"),
    ("link-to-outside-dir-file", "link-out-dir/outside-inner.txt"),
    ("link-abs-etc", "link-etc/passwd"),
    ("link-relative-up", "link-up/outside.txt"),
    ("link-chain", "link-chain/outside.txt"),
    ("link-in-middle", "inner/link-up-deep/outside.txt"),
    ("link-to-root-then-up", "link-self/../outside.txt"),
    ("dangling-abs", "dangling-abs"),
    ("dangling-rel-out", "dangling-out"),
    ("loop", "loop-a"),
    ("loop-dir", "loop-a/x"),
    ("proc-magic", "link-proc/self/root/etc/passwd"),
    ("dotdot-trailing", "inner/../.."),
    ("many-dotdot-after-real", "inner/deeper/../../../outside.txt"),
    ("nul-byte", "inner/\0/../../outside.txt"),
    ("abs-with-dotdot", "/../outside.txt"),
    ("link-out-dir-up", "link-out-dir/../outside.txt"),
    ("link-dotdot-target", "link-dotdot"),
    ("link-dotdot-target-child", "link-dotdot/outside.txt"),
    ("abs-dotdot-deep", "/inner/../../outside.txt"),
    ("abs-link-out-dir", "/link-out-dir/outside-inner.txt"),
    ("abs-dotdot-only", "/.."),
]

# Paths that name the volume root itself: refused by every method that would change or remove what it names.
ROOT_ALIASES = ["", "/", ".", "a/..", "inner/..", "./", "//", "/inner/..", "inner/deeper/../.."]


@pytest.fixture(params=["openat2", "walk"])
def use_openat2(request: pytest.FixtureRequest) -> bool:
    if request.param == "openat2" and not beneath.available():
        pytest.skip("this kernel has no openat2")
    return request.param == "openat2"


def build_world(base: Path) -> dict[str, Path]:
    """``base/outside*`` sentinels beside ``base/root``, the volume, full of hostile symlinks."""
    outside_dir = base / "outside-dir"
    outside_dir.mkdir(parents=True)
    (outside_dir / "outside-inner.txt").write_bytes(SENTINEL)
    (base / "outside.txt").write_bytes(SENTINEL)
    root = base / "root"
    (root / "inner" / "deeper").mkdir(parents=True)
    (root / "a").mkdir()
    (root / "inner" / "ok.txt").write_bytes(b"inside")
    links = {
        "link-out-file": "../outside.txt",
        "link-out-dir": str(outside_dir),
        "link-etc": "/etc",
        "link-up": "..",
        "link-chain": "link-up",
        "inner/link-up-deep": "../..",
        "link-self": ".",
        "dangling-abs": "/nonexistent/target",
        "dangling-out": "../does-not-exist.txt",
        "loop-a": "loop-b",
        "loop-b": "loop-a",
        "link-proc": "/proc",
        "link-dotdot": "inner/../..",
    }
    for name, target in links.items():
        os.symlink(target, root / name)
    return {"base": base, "root": root}


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Path]:
    return build_world(tmp_path)


def snapshot_outside(base: Path, root: Path) -> dict[str, bytes | None]:
    """Every path under ``base`` that is not inside ``root``, with file contents."""
    seen: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(base):
        if Path(dirpath) == root or root in Path(dirpath).parents:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            if path == root:
                continue
            seen[str(path)] = path.read_bytes() if path.is_file() and not path.is_symlink() else None
    return seen


def attempts(fs: VolumeFs, path: str) -> dict[str, object]:
    """Every VolumeFs method, aimed at ``path`` (as source and as destination)."""
    return {
        "read": lambda: fs.read(path),
        "read_text": lambda: fs.read_text(path),
        "write": lambda: fs.write(path, b"pwned"),
        "list": lambda: fs.list(path),
        "mkdir": lambda: fs.mkdir(path + "/newdir"),
        "mkdir-self": lambda: fs.mkdir(path),
        "remove_file": lambda: fs.remove_file(path),
        "remove_dir": lambda: fs.remove_dir(path),
        "exists": lambda: fs.exists(path),
        "stat": lambda: fs.stat(path),
        "rename-from": lambda: fs.rename(path, "inner/stolen.txt"),
        "rename-to": lambda: fs.rename("inner/ok.txt", path),
        "copy-from": lambda: fs.copy(path, "inner/copied.txt"),
        "copy-to": lambda: fs.copy("inner/ok.txt", path),
    }


def files_holding_sentinel(root: Path) -> list[str]:
    found = []
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath, name)
            if not path.is_symlink() and path.read_bytes() == SENTINEL:
                found.append(str(path))
    return found


METHODS = list(attempts(VolumeFs("/nonexistent"), "x"))


@pytest.mark.parametrize("name,path", EVIL_PATHS, ids=[n for n, _ in EVIL_PATHS])
def test_evil_path_never_leaves_root(tmp_path: Path, use_openat2: bool, name: str, path: str) -> None:
    """Each method against a fresh world: nothing outside changes, and no outside data is read or copied in."""
    for method in METHODS:
        world = build_world(tmp_path / method)
        base, root = world["base"], world["root"]
        before = snapshot_outside(base, root)
        fs = VolumeFs(root, use_openat2=use_openat2)
        try:
            result = attempts(fs, path)[method]()
        except (PathEscapeError, OSError, ValueError, InvalidConfigError):
            result = None  # refused: what we want; the outside is checked below either way
        assert result != SENTINEL, f"{method}({path!r}) read a file outside the root"
        if isinstance(result, list):
            assert all("outside" not in entry.path for entry in result), (method, path, result)
        assert snapshot_outside(base, root) == before, f"{method}({path!r}) changed something outside the root"
        assert files_holding_sentinel(root) == [], f"{method}({path!r}) copied outside data into the volume"
        assert (base / "outside.txt").read_bytes() == SENTINEL
        assert (base / "outside-dir" / "outside-inner.txt").read_bytes() == SENTINEL


@pytest.mark.parametrize("path", ["../outside.txt", "missing/../../../outside.txt", "/../etc/passwd", "link-out-file",
                                  "link-out-dir/outside-inner.txt", "link-etc/passwd", "link-up/outside.txt",
                                  "link-proc/self/root/etc/passwd"])
def test_reads_through_escapes_raise_path_escape(world: dict[str, Path], use_openat2: bool, path: str) -> None:
    fs = VolumeFs(world["root"], use_openat2=use_openat2)
    with pytest.raises((PathEscapeError, OSError)) as info:
        fs.read(path)
    # The lexical and symlink escapes are reported as such, not as a mere missing file.
    assert isinstance(info.value, PathEscapeError) or info.value.errno in (40, 18), info.value


def test_escape_error_is_typed(world: dict[str, Path], use_openat2: bool) -> None:
    fs = VolumeFs(world["root"], use_openat2=use_openat2)
    for path in ("../x", "missing/../../../x", "/../etc/passwd", "link-out-file", "link-out-dir/outside-inner.txt"):
        with pytest.raises(PathEscapeError, match="escapes volume root"):
            fs.read(path)


@pytest.mark.parametrize("alias", ROOT_ALIASES)
def test_root_aliases_are_refused_for_remove_dir_and_rename(world: dict[str, Path], use_openat2: bool,
                                                            alias: str) -> None:
    fs = VolumeFs(world["root"], use_openat2=use_openat2)
    with pytest.raises(InvalidConfigError, match="volume root"):
        fs.remove_dir(alias)
    with pytest.raises(InvalidConfigError, match="volume root"):
        fs.rename(alias, "inner/moved")
    with pytest.raises(InvalidConfigError, match="volume root"):
        fs.rename("inner/ok.txt", alias)
    with pytest.raises(InvalidConfigError, match="volume root"):
        fs.remove_file(alias)
    assert (world["root"] / "inner" / "ok.txt").read_bytes() == b"inside"


def test_leading_slash_names_the_volume_root_never_the_host(world: dict[str, Path], use_openat2: bool) -> None:
    """As in the seeds (``fs.write("/requirements.txt", ...)``): an absolute path is relative to the volume."""
    fs = VolumeFs(world["root"], use_openat2=use_openat2)
    assert fs.read("/inner/ok.txt") == b"inside"
    host_passwd = Path("/etc/passwd").read_bytes()
    fs.write("/etc/passwd", b"volume's own")
    assert (world["root"] / "etc" / "passwd").read_bytes() == b"volume's own"
    assert Path("/etc/passwd").read_bytes() == host_passwd
    assert [e.path for e in fs.list("/etc")] == ["etc/passwd"]
    fs.remove_dir("/etc")
    assert Path("/etc/passwd").read_bytes() == host_passwd


def test_symlink_leaf_is_removed_not_followed(world: dict[str, Path], use_openat2: bool) -> None:
    fs = VolumeFs(world["root"], use_openat2=use_openat2)
    fs.remove_file("link-out-file")
    assert not (world["root"] / "link-out-file").is_symlink()
    assert (world["base"] / "outside.txt").read_bytes() == SENTINEL
    with pytest.raises(NotADirectoryError):
        fs.remove_dir("link-out-dir")  # a symlink to a directory is not a directory of the volume
    assert (world["base"] / "outside-dir" / "outside-inner.txt").read_bytes() == SENTINEL


def test_symlinks_that_stay_inside_are_followed(world: dict[str, Path], use_openat2: bool) -> None:
    root = world["root"]
    os.symlink("inner", root / "alias")
    os.symlink("../inner/ok.txt", root / "a" / "ok-link")
    fs = VolumeFs(root, use_openat2=use_openat2)
    assert fs.read("alias/ok.txt") == b"inside"
    assert fs.read("a/ok-link") == b"inside"
    assert fs.stat("a/ok-link").kind == "symlink"
    assert fs.exists("alias/ok.txt")
    assert not fs.exists("inner/missing.txt")
    with pytest.raises(PathEscapeError):  # a symlink whose target leaves the root escapes, dangling or not
        fs.exists("dangling-out")


def test_directory_swapped_for_symlink_between_check_and_use(world: dict[str, Path], use_openat2: bool) -> None:
    """A racer flips ``race`` between a real directory and a symlink to outside while we write through it."""
    base, root = world["base"], world["root"]
    fs = VolumeFs(root, use_openat2=use_openat2)
    race = root / "race"
    stop = threading.Event()

    def flipper() -> None:
        while not stop.is_set():
            try:
                race.mkdir()
                race.rmdir()
                os.symlink(str(base / "outside-dir"), race)
                race.unlink()
            except OSError:
                pass

    racer = threading.Thread(target=flipper)
    racer.start()
    try:
        for i in range(400):
            for call in (lambda: fs.write("race/outside-inner.txt", b"pwned"),
                         lambda i=i: fs.write(f"race/new-{i}.txt", b"pwned"),
                         lambda: fs.remove_file("race/outside-inner.txt"),
                         lambda: fs.read("race/outside-inner.txt")):
                try:
                    call()
                except (OSError, PathEscapeError):
                    pass
    finally:
        stop.set()
        racer.join()
    assert (base / "outside-dir" / "outside-inner.txt").read_bytes() == SENTINEL
    assert sorted(os.listdir(base / "outside-dir")) == ["outside-inner.txt"]


def test_corpus_is_large_enough() -> None:
    assert len(EVIL_PATHS) >= 30
