"""What ``Sandbox.create`` was asked for, validated once: name, image, mounts, resources, security, isolation."""

from __future__ import annotations

import enum
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_microsandbox.errors import InvalidConfigError
from pytest_microsandbox.mounts import MountConfig, validate_guest_path
from pytest_microsandbox.validation import validate_volume_name
from pytest_microsandbox.vmm.spec import DEFAULT_SNAPSHOT_KEEP

MAX_MEMORY_MIB = 3072
MAX_CPUS = 32


class Isolation(enum.StrEnum):
    """How a sandbox is isolated: a KVM guest (``vm``), or Linux namespaces (``namespace``, weaker, opt-in only)."""

    VM = "vm"  # our VMM: the product, needs hardware KVM
    NAMESPACE = "namespace"  # Linux namespaces: weaker, explicit opt-in only


class Security(enum.StrEnum):
    """The guest's security profile: ``restricted`` adds no_new_privs, forces nosuid/nodev on every mount and drops
    CAP_SYS_ADMIN."""

    DEFAULT = "default"
    RESTRICTED = "restricted"  # no_new_privs, nosuid/nodev forced, CAP_SYS_ADMIN dropped


@dataclass(frozen=True)
class VmOptions:
    """How the vm backend runs a sandbox, settings a whole test run usually shares: the guest kernel, and whether
    sandboxes start from snapshot templates (``<home>/snapshots``) and how many of those stay cached."""

    kernel: str | None = None  # a kernel image or libkrunfw .so; None: the system's libkrunfw or the wheel's copy
    snapshots: bool = True  # False: every sandbox boots its kernel cold
    snapshot_keep: int = DEFAULT_SNAPSHOT_KEEP  # templates kept after a build (the least recently used go first)

    def __post_init__(self) -> None:
        if self.kernel is not None and (not isinstance(self.kernel, str) or not self.kernel or "\0" in self.kernel):
            raise InvalidConfigError(f"VmOptions.kernel must be a path, not {self.kernel!r}")
        if not isinstance(self.snapshots, bool):
            raise InvalidConfigError(f"VmOptions.snapshots must be True or False, not {self.snapshots!r}")
        if isinstance(self.snapshot_keep, bool) or not isinstance(self.snapshot_keep, int) or self.snapshot_keep < 1:
            raise InvalidConfigError(f"VmOptions.snapshot_keep must be a positive number, not {self.snapshot_keep!r}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (a detached owner process gets it on stdin)."""
        return {"kernel": self.kernel, "snapshots": self.snapshots, "snapshot_keep": self.snapshot_keep}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VmOptions:
        """The options ``to_dict`` wrote (absent keys take their defaults); bad values raise InvalidConfigError."""
        return cls(**{k: data[k] for k in ("kernel", "snapshots", "snapshot_keep") if k in data})


def new_sandbox_name() -> str:
    return f"sb-{secrets.token_hex(5)}"


@dataclass(frozen=True)
class SandboxConfig:
    name: str
    image: str = "host"
    volumes: Mapping[str, MountConfig] = field(default_factory=dict)
    memory_mib: int = 512
    cpus: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    security: Security = Security.DEFAULT
    isolation: Isolation = Isolation.VM
    boot_timeout: float = 60.0
    labels: Mapping[str, str] = field(default_factory=dict)  # e.g. msb.run / msb.worker from the plugin
    vm: VmOptions = field(default_factory=VmOptions)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form kept in the sandbox's store record."""
        return {
            "image": self.image,
            "volumes": {path: m.to_dict() for path, m in self.volumes.items()},
            "memory_mib": self.memory_mib,
            "cpus": self.cpus,
            "env": dict(self.env),
            "workdir": self.workdir,
            "security": str(self.security),
            "isolation": str(self.isolation),
            "labels": dict(self.labels),
        }


def _enum(value: object, kind: type[enum.StrEnum], what: str) -> Any:
    try:
        return kind(value)
    except ValueError:
        choices = "|".join(m.value for m in kind)
        raise InvalidConfigError(f"{what} must be one of {choices}, not {value!r}") from None


def _whole(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidConfigError(f"{what} must be a whole number from {low} to {high}, not {value!r}")
    return value


def build_config(
    *,
    name: str | None,
    image: str,
    volumes: Mapping[str, MountConfig] | None,
    memory_mib: int,
    cpus: int,
    env: Mapping[str, str] | None,
    workdir: str | None,
    security: str,
    isolation: str,
    boot_timeout: float,
    labels: Mapping[str, str] | None = None,
    vm: VmOptions | None = None,
) -> SandboxConfig:
    """Validate everything a user passed; raises InvalidConfigError naming the bad value."""
    name = validate_volume_name(name) if name is not None else new_sandbox_name()
    if not isinstance(image, str) or not image.strip():
        raise InvalidConfigError(f"image must be a non-empty reference, not {image!r}")
    mounts: dict[str, MountConfig] = {}
    for guest_path, mount in (volumes or {}).items():
        if not isinstance(guest_path, str):
            raise InvalidConfigError(f"guest path must be a string, not {guest_path!r}")
        if not isinstance(mount, MountConfig):
            raise InvalidConfigError(f"volumes[{guest_path!r}] must be a MountConfig (Volume.bind/named/tmpfs/disk)")
        path = validate_guest_path(guest_path)
        if path in mounts:
            raise InvalidConfigError(f"two mounts on the same guest path {path}")
        mounts[path] = mount
    environment: dict[str, str] = {}
    for key, value in (env or {}).items():
        if not isinstance(key, str) or not isinstance(value, str) or not key or "=" in key or "\0" in key + value:
            raise InvalidConfigError(f"bad environment variable {key!r}={value!r}")
        environment[key] = value
    if workdir is not None and (not isinstance(workdir, str) or not workdir.startswith("/") or "\0" in workdir):
        raise InvalidConfigError(f"workdir must be an absolute guest path, not {workdir!r}")
    if vm is not None and not isinstance(vm, VmOptions):
        raise InvalidConfigError(f"vm must be a VmOptions, not {vm!r}")
    if isinstance(boot_timeout, bool) or not isinstance(boot_timeout, int | float) or boot_timeout <= 0:
        raise InvalidConfigError(f"boot_timeout must be a positive number of seconds, not {boot_timeout!r}")
    return SandboxConfig(
        name=name,
        image=image,
        volumes=mounts,
        memory_mib=_whole(memory_mib, "memory_mib", 64, MAX_MEMORY_MIB),
        cpus=_whole(cpus, "cpus", 1, MAX_CPUS),
        env=environment,
        workdir=os.path.normpath(workdir) if workdir else None,
        security=_enum(security, Security, "security"),
        isolation=_enum(isolation, Isolation, "isolation"),
        boot_timeout=float(boot_timeout),
        labels=dict(labels or {}),
        vm=vm or VmOptions(),
    )
