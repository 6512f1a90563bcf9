"""What a sandbox mounts: ``MountConfig`` and its ``MountKind``, validated when built."""

from __future__ import annotations

import enum
import os
import re
from dataclasses import asdict, dataclass

from pytest_microsandbox.errors import InvalidConfigError
from pytest_microsandbox.validation import validate_mib, validate_volume_name

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (about 10 ms of a cold start)
if TYPE_CHECKING:
    from typing import Any

_FSTYPE = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}\Z")


class MountKind(enum.StrEnum):
    """What a mount brings into a sandbox: a host path, a named volume, a fresh tmpfs or a disk image."""

    BIND = "bind"
    NAMED = "named"
    TMPFS = "tmpfs"
    DISK = "disk"


class VolumeKind(enum.StrEnum):
    """What a named volume is on the host: a directory, or an ext4 disk image."""

    DIRECTORY = "dir"
    DISK = "disk"


class NamedVolumeMode(enum.StrEnum):
    """What mounting a named volume does when it does not exist yet."""

    EXISTING = "existing"  # it must exist (the default)
    CREATE = "create"  # it must not exist: the sandbox creates it
    ENSURE_EXISTS = "ensure-exists"  # created if missing, used as it is otherwise


class DiskImageFormat(enum.StrEnum):
    """The format of a disk image a sandbox attaches."""

    RAW = "raw"
    QCOW2 = "qcow2"
    VMDK = "vmdk"

    @classmethod
    def from_path(cls, path: str) -> DiskImageFormat:
        """The format a disk image's extension names (``.qcow2``, ``.vmdk``); anything else is raw."""
        ext = os.path.splitext(path)[1].lower().lstrip(".")
        return cls(ext) if ext in cls._value2member_map_ else cls.RAW


# Which optional fields each kind accepts; every kind takes the four flags.
_ALLOWED = {
    MountKind.BIND: {"bind", "quota_mib"},
    MountKind.NAMED: {"named", "named_mode", "named_kind", "quota_mib", "size_mib"},
    MountKind.TMPFS: {"size_mib"},
    MountKind.DISK: {"disk", "format", "fstype"},
}
_OPTIONAL = ("bind", "named", "named_mode", "named_kind", "quota_mib", "size_mib", "disk", "format", "fstype")


@dataclass(frozen=True, slots=True)
class MountConfig:
    """One mount of a sandbox. Build it with ``Volume.bind/named/tmpfs/disk``."""

    kind: MountKind
    bind: str | None = None
    named: str | None = None
    named_mode: NamedVolumeMode | None = None
    named_kind: VolumeKind | None = None
    quota_mib: int | None = None
    size_mib: int | None = None
    disk: str | None = None
    format: DiskImageFormat | None = None
    fstype: str | None = None
    readonly: bool = False
    noexec: bool = False
    nosuid: bool = False
    nodev: bool = False

    def __post_init__(self) -> None:
        try:
            kind = MountKind(self.kind)
        except ValueError:
            raise InvalidConfigError(f"unknown mount kind {self.kind!r}") from None
        object.__setattr__(self, "kind", kind)
        for flag in ("readonly", "noexec", "nosuid", "nodev"):
            if not isinstance(getattr(self, flag), bool):
                raise InvalidConfigError(f"mount option {flag} must be True or False, not {getattr(self, flag)!r}")
        extra = [f for f in _OPTIONAL if getattr(self, f) is not None and f not in _ALLOWED[kind]]
        if extra:
            raise InvalidConfigError(f"{kind} mounts do not take {', '.join(extra)}")
        getattr(self, f"_check_{kind.value}")()

    def _check_bind(self) -> None:
        object.__setattr__(self, "bind", _host_path(self.bind, "bind mount source"))
        validate_mib(self.quota_mib, "bind mount quota_mib")

    def _check_named(self) -> None:
        validate_volume_name(self.named)
        mode = _enum_field(self, "named_mode", NamedVolumeMode, "named volume mode")
        kind = _enum_field(self, "named_kind", VolumeKind, "volume kind")
        creates = mode in (NamedVolumeMode.CREATE, NamedVolumeMode.ENSURE_EXISTS)
        if not creates and (kind or self.quota_mib is not None or self.size_mib is not None):
            raise InvalidConfigError("kind, size_mib and quota_mib of a named mount apply only when it may create the "
                                     "volume (mode=NamedVolumeMode.CREATE or ENSURE_EXISTS)")
        validate_mib(self.quota_mib, "quota_mib")
        validate_mib(self.size_mib, "size_mib")

    def _check_tmpfs(self) -> None:
        validate_mib(self.size_mib, "tmpfs size_mib")

    def _check_disk(self) -> None:
        path = _host_path(self.disk, "disk image")
        object.__setattr__(self, "disk", path)
        if self.format is None:
            object.__setattr__(self, "format", DiskImageFormat.from_path(path))
        else:
            _enum_field(self, "format", DiskImageFormat, "disk image format")
        if self.fstype is not None and not (isinstance(self.fstype, str) and _FSTYPE.match(self.fstype)):
            raise InvalidConfigError(f"invalid filesystem type {self.fstype!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (None fields left out), as stored in sandbox records and mount plans."""
        return {k: (str(v) if isinstance(v, enum.Enum) else v) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MountConfig:
        """The mount ``to_dict`` wrote (validated again)."""
        return cls(**data)


_BAD_GUEST_CHARS = re.compile(r"[:;,\0]")


def validate_guest_path(path: str) -> str:
    """A mount point inside the guest: absolute, not ``/``, without ``:;,``; returned normalised."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidConfigError(f"guest path {path!r} must be absolute")
    if _BAD_GUEST_CHARS.search(path):
        raise InvalidConfigError(f"guest path {path!r} must not contain ':', ';', ',' or NUL")
    normal = os.path.normpath("/" + path.lstrip("/"))  # normpath keeps a leading '//'
    if normal == "/":
        raise InvalidConfigError("cannot mount over the guest's root '/'")
    return normal


def _enum_field(config: MountConfig, name: str, enum_type: type[enum.StrEnum], what: str) -> enum.StrEnum | None:
    value = getattr(config, name)
    if value is None:
        return None
    try:
        member = enum_type(value)
    except ValueError:
        choices = ", ".join(m.value for m in enum_type)
        raise InvalidConfigError(f"unknown {what} {value!r} (expected {choices})") from None
    object.__setattr__(config, name, member)
    return member


def _host_path(value: object, what: str) -> str:
    if not isinstance(value, str | os.PathLike):
        raise InvalidConfigError(f"{what} must be a path, not {value!r}")
    text = os.fspath(value)
    if not text or "\0" in text:
        raise InvalidConfigError(f"{what} must be a non-empty path without NUL bytes")
    return os.path.abspath(text)
