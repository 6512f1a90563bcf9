"""The VMM spec's one wire form (``vmm.spec``): what the owner sends comes back equal, anything else is refused with
a clear SpecError; and the zygote's resolution of a spec is a new value, the owner's left as it was."""

from __future__ import annotations

import json
import os
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from pytest_microsandbox.vmm.spec import (
    SPEC_VERSION,
    DiskSpec,
    ResolvedSpec,
    ShareSpec,
    SpecError,
    VmSpec,
    decode,
    encode,
)

SPEC = VmSpec(memory_mib=256, cpus=2, kernel="/k", console_log="/run/console.log",
              disks=(DiskSpec("/root.ext4", read_only=True, serial="msb-root"),
                     DiskSpec("/d.qcow2", read_only=False, serial="msb-disk0", format="qcow2")),
              shares=(ShareSpec("msb-fs0", "/srv", readonly=False, quota_mib=64, cache_seconds=600.0),),
              snapshots="/home/snapshots", image_digest="sha256:abc", requested_at=12.5)


def test_a_spec_goes_through_json_and_comes_back_equal() -> None:
    wire = json.loads(json.dumps(encode(SPEC)))
    assert wire["version"] == SPEC_VERSION
    assert wire["disks"][1] == {"path": "/d.qcow2", "read_only": False, "serial": "msb-disk0", "format": "qcow2"}
    assert decode(wire) == SPEC
    resolved = ResolvedSpec(SPEC, kernel_error="", kernel_mounts=("/proc", "/sys"))
    assert decode(json.loads(json.dumps(encode(resolved))), ResolvedSpec) == resolved
    assert decode(encode(ResolvedSpec(SPEC)), ResolvedSpec).kernel_mounts is None


def test_its_parts_are_values() -> None:
    with pytest.raises(FrozenInstanceError):
        SPEC.disks[0].path = "/elsewhere"  # type: ignore[misc]


@pytest.mark.parametrize("change, error", [
    (lambda w: {**w, "version": SPEC_VERSION + 1}, f"version {SPEC_VERSION + 1}; this side reads"),
    (lambda w: {k: v for k, v in w.items() if k != "version"}, "version None"),
    (lambda w: {k: v for k, v in w.items() if k != "cpus"}, r"spec: missing fields \['cpus'\]"),
    (lambda w: {**w, "gpus": 1}, r"spec: unknown fields \['gpus'\]"),
    (lambda w: {**w, "memory_mib": "256"}, "spec.memory_mib must be int, not str"),
    (lambda w: {**w, "memory_mib": True}, "spec.memory_mib must be int, not bool"),
    (lambda w: {**w, "kernel": 5}, "spec.kernel must be str, not int"),
    (lambda w: {**w, "disks": {}}, "spec.disks must be a list, not dict"),
    (lambda w: {**w, "disks": ["/d"]}, r"spec.disks\[0\] must be an object, not str"),
    (lambda w: {**w, "shares": [{**w["shares"][0], "readonly": "no"}]}, r"spec.shares\[0\].readonly must be bool"),
    (lambda w: [w], "a VM spec is a JSON object, not list"),
], ids=["another-version", "no-version", "missing", "unknown", "str-for-int", "bool-for-int", "int-for-str",
        "dict-for-list", "str-for-object", "str-for-bool", "not-an-object"])
def test_anything_else_is_refused_clearly(change, error) -> None:
    with pytest.raises(SpecError, match=error):
        decode(change(encode(SPEC)))


def test_a_whole_number_is_a_float_and_defaults_may_be_left_out() -> None:
    wire = {"version": SPEC_VERSION, "memory_mib": 64, "cpus": 1, "kernel": None, "console_log": "/c",
            "boot_timeout": 60}
    spec = decode(wire)
    assert spec == VmSpec(64, 1, None, "/c") and isinstance(spec.boot_timeout, float)


def test_resolve_returns_a_new_spec_and_leaves_the_owners_alone(tmp_path: Path) -> None:
    from pytest_microsandbox.vmm.process import Preloaded

    kernel, share, link = tmp_path / "kernel", tmp_path / "share", tmp_path / "link"
    kernel.write_bytes(b"not really a kernel")
    share.mkdir()
    link.symlink_to(share)
    spec = VmSpec(64, 1, str(kernel), str(tmp_path / "console.log"),
                  shares=(ShareSpec("msb-fs0", str(link), readonly=True),), snapshots=str(tmp_path / "snapshots"))
    preloaded = Preloaded(b"initramfs", "hardware", None, kernel_mounts=("/proc",))
    resolved = preloaded.resolve(spec)
    real = os.path.realpath
    assert resolved == ResolvedSpec(
        VmSpec(64, 1, real(kernel), real(tmp_path / "console.log"),
               shares=(ShareSpec("msb-fs0", real(share), readonly=True),), snapshots=real(tmp_path / "snapshots")),
        kernel_error="", kernel_mounts=("/proc",))
    assert spec.shares[0].root == str(link)  # the owner's spec is as it was
    missing = preloaded.resolve(VmSpec(64, 1, str(tmp_path / "typo"), str(tmp_path / "console.log")))
    assert "does not exist" in missing.kernel_error and "MSB_KERNEL" in missing.kernel_error
