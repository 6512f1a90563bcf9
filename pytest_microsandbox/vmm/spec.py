"""What a VMM process builds (``VmSpec``), and its one wire form between processes.

The owner sends ``encode(spec)`` to the zygote, which parses it with ``decode`` and hands its forked VMM the
``ResolvedSpec`` the same way. On the wire a spec is a JSON object: ``{"version": SPEC_VERSION, <its fields>}``,
disks and shares as lists of objects of their fields. ``decode`` refuses another version, a missing or unknown
field and a value of the wrong type (``SpecError``), so both sides agree on every field or the request fails clearly.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass

from _vmcore.layout import MAX_DEVICES as MAX_DEVICES  # the console's included: a sandbox has one fewer

SPEC_VERSION = 1
AGENT_PORT = "agent"
ROOT_SERIAL = "msb-root"
DEFAULT_SNAPSHOT_KEEP = 8

# How long a guest may trust what a share told it (names, attributes, missing names of read-only shares, file
# pages): an image (the host's root or an overlay's lower) does not change during a sandbox's life; a bind is the
# host's live directory, where a test may write while its sandbox runs.
IMAGE_CACHE_SECONDS = 600.0
BIND_CACHE_SECONDS = 1.0


class SpecError(ValueError):
    """A spec on the wire that this side cannot read: another version, or a field missing, unknown or mistyped."""


@dataclass(frozen=True)
class DiskSpec:
    """A disk image on virtio-blk; the guest mounts it by ``serial``."""

    path: str
    read_only: bool
    serial: str
    format: str = "raw"  # raw, qcow2 or vmdk


@dataclass(frozen=True)
class ShareSpec:
    """A host directory on virtio-fs; the guest mounts it by ``tag``."""

    tag: str
    root: str
    readonly: bool
    quota_mib: int | None = None
    cache_seconds: float = BIND_CACHE_SECONDS


@dataclass(frozen=True)
class VmSpec:
    """What the VMM process builds: the sandbox's devices as host paths, its template cache and its limits."""

    memory_mib: int
    cpus: int
    kernel: str | None
    console_log: str  # in the sandbox's run directory, where the VMM also builds its jail's root
    disks: tuple[DiskSpec, ...] = ()
    shares: tuple[ShareSpec, ...] = ()  # tagged msb-fs0, msb-fs1, ... in order
    snapshots: str | None = None  # the template cache (<home>/snapshots); None: boot this machine cold
    snapshot_keep: int = DEFAULT_SNAPSHOT_KEEP  # templates kept after a build (the least recently used go)
    image_digest: str = ""  # part of the template's key
    boot_timeout: float = 60.0
    requested_at: float = 0.0  # time.monotonic() when the backend was asked: the VMM reports its host overhead
    report_memory: bool = False  # ... and its PSS then (benchmarks)


@dataclass(frozen=True)
class ResolvedSpec:
    """A spec as the zygote hands it to its VMM: every path resolved, the kernel found (or why not), and where the
    host has its kernel's own file systems mounted (None: the VMM reads that itself)."""

    spec: VmSpec
    kernel_error: str = ""
    kernel_mounts: tuple[str, ...] | None = None


SpecT = typing.TypeVar("SpecT", VmSpec, ResolvedSpec)


def encode(value: VmSpec | ResolvedSpec) -> dict:
    """``value`` as plain JSON values (tuples as lists), with the version."""
    return {"version": SPEC_VERSION, **_plain(dataclasses.asdict(value))}


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def decode(raw: object, kind: type[SpecT] = VmSpec) -> SpecT:
    """The ``kind`` that ``encode`` made ``raw`` from; SpecError if ``raw`` is not one of this version."""
    if not isinstance(raw, dict):
        raise SpecError(f"a VM spec is a JSON object, not {type(raw).__name__}")
    if raw.get("version") != SPEC_VERSION:
        raise SpecError(f"VM spec version {raw.get('version')!r}; this side reads version {SPEC_VERSION}")
    return _parse(kind, {k: v for k, v in raw.items() if k != "version"}, "spec")


def _parse(hint, value, where: str):
    if dataclasses.is_dataclass(hint):
        return _parse_fields(hint, value, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (hint,) = (a for a in args if a is not type(None))
        return _parse(hint, value, where)
    if origin is tuple:  # tuple[X, ...]: a JSON list
        if not isinstance(value, list):
            raise SpecError(f"{where} must be a list, not {type(value).__name__}")
        return tuple(_parse(args[0], item, f"{where}[{i}]") for i, item in enumerate(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # JSON has one kind of number: 60 is a float too
    if type(value) is not hint:
        raise SpecError(f"{where} must be {hint.__name__}, not {type(value).__name__}")
    return value


@functools.cache
def _field_types(cls: type) -> dict[str, object]:
    """The fields' types, evaluated once per class (``get_type_hints`` evaluates every annotation each call)."""
    return typing.get_type_hints(cls)


def _parse_fields(cls, value, where: str):
    if not isinstance(value, dict):
        raise SpecError(f"{where} must be an object, not {type(value).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    missing = sorted(name for name, f in fields.items() if name not in value
                     and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)
    if unknown or missing:
        raise SpecError(f"{where}: " + "; ".join(filter(None, [unknown and f"unknown fields {unknown}",
                                                               missing and f"missing fields {missing}"])))
    hints = _field_types(cls)
    return cls(**{name: _parse(hints[name], item, f"{where}.{name}") for name, item in value.items()})
