"""``msb volume mount`` on the host (issue 16, item 6): only the caller may enter the mount unless ``--allow-other``,
and a ``--readonly`` mount is a read-only mount (``MS_RDONLY``), so ``access(W_OK)`` says not writable."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pytest_microsandbox.sync import Volume

NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="mount(2) of a FUSE connection needs CAP_SYS_ADMIN"),
    pytest.mark.skipif(not os.access("/dev/fuse", os.R_OK | os.W_OK), reason="no usable /dev/fuse"),
]


@pytest.fixture
def mountpoint() -> Iterator[Path]:
    """A mount point every user can reach (pytest's temp directories are 0700: they would refuse uid 65534 on
    their own and prove nothing about the mount)."""
    parent = Path(tempfile.mkdtemp(prefix="msb-mount-"))
    parent.chmod(0o755)
    (parent / "mnt").mkdir(mode=0o755)
    yield parent / "mnt"
    shutil.rmtree(parent, ignore_errors=True)


@contextmanager
def mounted(name: str, mountpoint: Path, *flags: str) -> Iterator[None]:
    proc = subprocess.Popen([sys.executable, "-m", "pytest_microsandbox", "volume", "mount", name, str(mountpoint),
                             *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        if not line.startswith("mounted "):
            proc.wait(30)
            err = proc.stderr.read()
            if "cannot mount" in err:
                pytest.skip(f"FUSE mounts unavailable here: {err.strip()}")
            raise AssertionError(err)
        yield
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert not os.path.ismount(mountpoint)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*NOBODY, *argv], capture_output=True, text=True, timeout=60)


@pytest.fixture
def volume(home: Path) -> Iterator[str]:
    home.mkdir(mode=0o700)  # a home only its owner may enter
    Volume.create("private").fs.write("secret.txt", b"top secret")  # 0o644 in a 0o755 root: the modes allow others
    yield "private"
    Volume.remove("private")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_only_the_caller_enters_the_mount_by_default(volume: str, mountpoint: Path) -> None:
    with mounted(volume, mountpoint):
        assert (mountpoint / "secret.txt").read_bytes() == b"top secret"  # the caller reads it
        refused = as_nobody("cat", str(mountpoint / "secret.txt"))
        assert refused.returncode != 0 and "top secret" not in refused.stdout
        assert "Permission denied" in refused.stderr
        assert "allow_other" not in _options_of(mountpoint)


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_allow_other_is_an_explicit_choice(volume: str, mountpoint: Path) -> None:
    with mounted(volume, mountpoint, "--allow-other"):
        allowed = as_nobody("cat", str(mountpoint / "secret.txt"))
        assert allowed.returncode == 0 and allowed.stdout == "top secret"  # so the refusal above was the mount's
        assert "allow_other" in _options_of(mountpoint)


def test_readonly_mount_is_mounted_read_only(volume: str, mountpoint: Path) -> None:
    with mounted(volume, mountpoint, "--readonly"):
        target = mountpoint / "secret.txt"
        assert target.read_bytes() == b"top secret"
        assert not os.access(target, os.W_OK)
        assert not os.access(mountpoint, os.W_OK)
        assert os.statvfs(mountpoint).f_flag & os.ST_RDONLY
        with pytest.raises(OSError) as refused:
            target.write_bytes(b"changed")
        assert refused.value.errno == 30  # EROFS
    assert Volume.get(volume).fs.read("secret.txt") == b"top secret"


def test_writable_mount_says_writable(volume: str, mountpoint: Path) -> None:
    with mounted(volume, mountpoint):
        assert os.access(mountpoint / "secret.txt", os.W_OK)
        assert not os.statvfs(mountpoint).f_flag & os.ST_RDONLY


def _options_of(mountpoint: Path) -> str:
    """The mount's options as /proc/self/mountinfo lists them (superblock options last)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(mountpoint):
            return line
    raise AssertionError(f"{mountpoint} is not mounted")
