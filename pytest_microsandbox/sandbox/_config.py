"""What ``Sandbox.create`` was asked for, validated once: name, image, mounts, resources, security, isolation."""

from __future__ import annotations

import enum
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pytest_microsandbox._validate import validate_volume_name
from pytest_microsandbox.errors import InvalidConfigError
from pytest_microsandbox.mounts import MountConfig, validate_guest_path

MAX_MEMORY_MIB = 3072
MAX_CPUS = 32


class Isolation(enum.StrEnum):
    VM = "vm"  # our VMM: the product, needs hardware KVM
    NAMESPACE = "namespace"  # Linux namespaces: weaker, explicit opt-in only


class Security(enum.StrEnum):
    DEFAULT = "default"
    RESTRICTED = "restricted"  # no_new_privs, nosuid/nodev forced, CAP_SYS_ADMIN dropped


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
    )
