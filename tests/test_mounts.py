"""MountConfig: frozen, validated at construction, one shape per MountKind."""

from __future__ import annotations

import dataclasses

import pytest

from pytest_microsandbox import DiskImageFormat, InvalidConfigError, MountConfig, MountKind, Volume


def test_kinds_are_the_seed_strings() -> None:
    assert [k.value for k in MountKind] == ["bind", "named", "tmpfs", "disk"]


def test_frozen() -> None:
    config = Volume.tmpfs(size_mib=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.size_mib = 9  # type: ignore[misc]


@pytest.mark.parametrize(
    "path,fmt",
    [("a.raw", "raw"), ("a.img", "raw"), ("A.QCOW2", "qcow2"), ("a.vmdk", "vmdk"), ("noext", "raw")],
)
def test_disk_format_from_extension(path: str, fmt: str) -> None:
    assert Volume.disk(path).format == DiskImageFormat(fmt)


def test_explicit_disk_format_and_fstype() -> None:
    config = Volume.disk("/x/disk", format="qcow2", fstype="ext4", readonly=True)
    assert (config.format, config.fstype, config.readonly) == (DiskImageFormat.QCOW2, "ext4", True)


@pytest.mark.parametrize(
    "build,message",
    [
        (lambda: Volume.disk("/x", format="iso"), "unknown disk image format"),
        (lambda: Volume.disk("/x", fstype="ext4;rm"), "invalid filesystem type"),
        (lambda: Volume.disk(""), "non-empty path"),
        (lambda: Volume.bind(""), "non-empty path"),
        (lambda: Volume.bind("/a\0b"), "NUL"),
        (lambda: Volume.bind("/a", quota_mib=-1), "positive"),
        (lambda: Volume.named("../etc"), "invalid volume name"),
        (lambda: Volume.tmpfs(size_mib=0), "positive"),
        (lambda: Volume.tmpfs(size_mib=1.5), "whole number"),  # type: ignore[arg-type]
        (lambda: Volume.tmpfs(readonly="yes"), "True or False"),  # type: ignore[arg-type]
        (lambda: MountConfig(MountKind.TMPFS, bind="/x"), "do not take bind"),
        (lambda: MountConfig(MountKind.NAMED, named="v", size_mib=3), "apply only when it may create"),
        (lambda: MountConfig(MountKind.TMPFS, named_mode="create"), "do not take named_mode"),
        (lambda: Volume.named("v", mode="sometimes"), "unknown named volume mode"),
        (lambda: Volume.named("v", mode="create", kind="tape"), "unknown volume kind"),
        (lambda: MountConfig("nfs"), "unknown mount kind"),  # type: ignore[arg-type]
        (lambda: Volume.bind(3), "must be a path"),  # type: ignore[arg-type]
    ],
)
def test_invalid_configs_raise_typed_errors(build, message: str) -> None:
    with pytest.raises(InvalidConfigError, match=message):
        build()


def test_round_trip_through_dict() -> None:
    for config in (Volume.bind("/srv", readonly=True, quota_mib=5), Volume.named("v", noexec=True),
                   Volume.tmpfs(size_mib=64, nosuid=True), Volume.disk("/d.qcow2", nodev=True)):
        assert MountConfig.from_dict(config.to_dict()) == config


def test_relative_bind_paths_become_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert Volume.bind("src").bind == str(tmp_path / "src")


def test_every_flag_reaches_the_config() -> None:
    flags = {"readonly": True, "noexec": True, "nosuid": True, "nodev": True}
    for config in (Volume.bind("/srv", **flags), Volume.named("v", **flags), Volume.tmpfs(**flags),
                   Volume.disk("/d.img", **flags)):
        assert all(getattr(config, flag) for flag in flags), config
