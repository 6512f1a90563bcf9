"""The command line's mount grammar."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_microsandbox import InvalidConfigError, MountConfig, MountKind
from pytest_microsandbox.cli.mount_flags import parse_mount_flags
from pytest_microsandbox.mounts import validate_guest_path


def test_every_flag_kind(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    mounts = parse_mount_flags([
        ("--mount-dir", f"{tmp_path}:/src:ro"),
        ("--mount-file", f"{tmp_path}/file.txt:/etc/app.conf"),
        ("--mount-named", "pip-cache:/root/.cache/pip:noexec,nosuid,nodev"),
        ("--mount-disk", f"{tmp_path}/data.qcow2:/data:fstype=ext4,ro"),
        ("--tmpfs", "/scratch:size=512M"),
        ("-v", "cache:/cache"),
        ("-v", f"{tmp_path}:/host:ro"),
    ])
    assert mounts == {
        "/src": MountConfig(MountKind.BIND, bind=str(tmp_path), readonly=True),
        "/etc/app.conf": MountConfig(MountKind.BIND, bind=f"{tmp_path}/file.txt"),
        "/root/.cache/pip": MountConfig(MountKind.NAMED, named="pip-cache", noexec=True, nosuid=True, nodev=True),
        "/data": MountConfig(MountKind.DISK, disk=f"{tmp_path}/data.qcow2", format="qcow2", fstype="ext4",
                             readonly=True),
        "/scratch": MountConfig(MountKind.TMPFS, size_mib=512),
        "/cache": MountConfig(MountKind.NAMED, named="cache"),
        "/host": MountConfig(MountKind.BIND, bind=str(tmp_path), readonly=True),
    }


@pytest.mark.parametrize("size,mib", [("100", 100), ("512M", 512), ("1G", 1024), ("2GiB", 2048), ("1024K", 1)])
def test_sizes(size: str, mib: int) -> None:
    assert parse_mount_flags([("--tmpfs", f"/t:size={size}")])["/t"].size_mib == mib


def test_quota_on_directories() -> None:
    assert parse_mount_flags([("--mount-dir", "/srv:/srv:quota=1G")])["/srv"].quota_mib == 1024


@pytest.mark.parametrize(
    "flag,spec,message",
    [
        ("--tmpfs", "/t:size=1M,size=2M", "more than once"),
        ("--tmpfs", "/t:ro,ro", "more than once"),
        ("--tmpfs", "/t:ro,readonly", "more than once"),
        ("--mount-dir", "/a:/b:ro,rw", "contradict"),
        ("--mount-dir", "/a:/b:size=1G", "unknown option 'size' for a bind mount (it applies to tmpfs"),
        ("--tmpfs", "/t:fstype=ext4", "it applies to disk"),
        ("--mount-named", "v:/b:quota=1G", "unknown option 'quota' for a named mount"),
        ("--mount-named", "v:/b:bogus", "unknown option 'bogus'"),
        ("--tmpfs", "/t:ro=1", "takes no value"),
        ("--tmpfs", "/t:size=", "needs a value"),
        ("--tmpfs", "/t:size=1.5G", "invalid --tmpfs size"),
        ("--tmpfs", "/t:", "empty options"),
        ("--tmpfs", "/t:ro,", "empty option"),
        ("--tmpfs", "/t:ro:noexec", "DEST[:OPTIONS]"),
        ("--mount-dir", "/only-source", "SOURCE:DEST"),
        ("--mount-dir", ":/dest", "SOURCE:DEST"),
        ("--mount-dir", "/a:/b:ro:extra", "SOURCE:DEST"),
        ("--mount-dir", "/a:relative", "must be absolute"),
        ("--mount-dir", "/a:/", "root"),
        ("--mount-dir", "/a:/x;y", "must not contain"),
        ("--mount-named", "../x:/b", "invalid volume name"),
        ("--mount-disk", "/d.img:/d:format=iso", "unknown disk image format"),
        ("--mount-file", "/tmp:/x", "is a directory"),
        ("--mount-cd", "/a:/b", "unknown mount flag"),
    ],
)
def test_errors_are_clear(flag: str, spec: str, message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_mount_flags([(flag, spec)])


def test_two_mounts_at_one_guest_path_are_refused() -> None:
    with pytest.raises(InvalidConfigError, match="already mounted"):
        parse_mount_flags([("--tmpfs", "/x"), ("-v", "v:/x/")])


def test_guest_path_is_normalised() -> None:
    assert validate_guest_path("/a//b/./c/") == "/a/b/c"
    assert validate_guest_path("//foo") == "/foo"  # os.path.normpath alone would keep the double slash
    with pytest.raises(InvalidConfigError, match="already mounted"):
        parse_mount_flags([("--tmpfs", "/foo"), ("--tmpfs", "//foo")])
