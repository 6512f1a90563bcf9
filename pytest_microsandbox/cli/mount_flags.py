"""The command line's mount grammar: ``--mount-dir``, ``--mount-file``, ``--mount-named``, ``--mount-disk``,
``--tmpfs`` and ``-v``, each ``SOURCE:DEST[:OPTIONS]`` (``--tmpfs DEST[:OPTIONS]``), turned into ``MountConfig``s.

OPTIONS is a comma-separated list: ``ro``/``readonly``, ``rw``, ``noexec``, ``nosuid``, ``nodev`` for every kind;
``size=SIZE`` for tmpfs; ``quota=SIZE`` for directories; ``format=raw|qcow2|vmdk`` and ``fstype=TYPE`` for disks.
SIZE is MiB (``100``) or has a unit (``512M``, ``1G``).
"""

from __future__ import annotations

import os

from pytest_microsandbox.errors import InvalidConfigError
from pytest_microsandbox.mounts import MountConfig, MountKind, validate_guest_path
from pytest_microsandbox.validation import parse_size_mib

_FLAGS = {"ro": "readonly", "readonly": "readonly", "rw": "rw", "noexec": "noexec", "nosuid": "nosuid",
          "nodev": "nodev"}
# The valued options each kind accepts, and the MountConfig field each one sets.
_VALUED = {
    MountKind.BIND: {"quota": "quota_mib"},
    MountKind.NAMED: {},
    MountKind.TMPFS: {"size": "size_mib"},
    MountKind.DISK: {"format": "format", "fstype": "fstype"},
}
_FLAG_NAMES = {"--mount-dir": MountKind.BIND, "--mount-file": MountKind.BIND, "--mount-named": MountKind.NAMED,
               "--mount-disk": MountKind.DISK, "--tmpfs": MountKind.TMPFS}


def parse_options(kind: MountKind, text: str, flag: str) -> dict[str, object]:
    """Parse ``ro,noexec,size=1G`` for a mount of ``kind`` into MountConfig keyword arguments."""
    seen: set[str] = set()
    result: dict[str, object] = {}
    for item in text.split(","):
        key, has_value, value = item.partition("=")
        key = key.strip()
        if not key:
            raise InvalidConfigError(f"{flag}: empty option in {text!r}")
        canonical = _FLAGS.get(key, key)
        if canonical in seen:
            raise InvalidConfigError(f"{flag}: option {key!r} given more than once in {text!r}")
        if canonical in ("readonly", "rw") and seen & {"readonly", "rw"}:
            raise InvalidConfigError(f"{flag}: 'ro' and 'rw' contradict each other in {text!r}")
        seen.add(canonical)
        if key in _FLAGS:
            if has_value:
                raise InvalidConfigError(f"{flag}: option {key!r} takes no value")
            if canonical != "rw":
                result[canonical] = True
            continue
        field = _VALUED[kind].get(key)
        if field is None:
            owner = next((str(k) for k, opts in _VALUED.items() if key in opts), None)
            where = f" (it applies to {owner} mounts)" if owner else ""
            raise InvalidConfigError(f"{flag}: unknown option {key!r} for a {kind} mount{where}")
        if not has_value or not value:
            raise InvalidConfigError(f"{flag}: option {key!r} needs a value ({key}=...)")
        result[field] = parse_size_mib(value, f"{flag} {key}") if field.endswith("_mib") else value
    return result


def parse_mount_flag(flag: str, spec: str) -> tuple[str, MountConfig]:
    """One flag's value into ``(guest_path, MountConfig)``."""
    if flag == "-v" or flag == "--volume":
        kind = None
    elif flag in _FLAG_NAMES:
        kind = _FLAG_NAMES[flag]
    else:
        raise InvalidConfigError(f"unknown mount flag {flag}")
    fields = spec.split(":")
    if kind is MountKind.TMPFS:
        if len(fields) > 2 or not fields[0]:
            raise InvalidConfigError(f"{flag} {spec!r}: expected DEST[:OPTIONS]")
        source, dest, options = None, fields[0], fields[1] if len(fields) == 2 else None
    else:
        if len(fields) not in (2, 3) or not fields[0] or not fields[1]:
            raise InvalidConfigError(f"{flag} {spec!r}: expected SOURCE:DEST[:OPTIONS]")
        source, dest, options = fields[0], fields[1], fields[2] if len(fields) == 3 else None
        if kind is None:  # -v: a path is a bind mount, a bare name a named volume (as docker does it)
            kind = MountKind.BIND if source.startswith(("/", ".", "~")) else MountKind.NAMED
    if options == "":
        raise InvalidConfigError(f"{flag} {spec!r}: empty options after ':'")
    guest = validate_guest_path(dest)
    kwargs = parse_options(kind, options, flag) if options is not None else {}
    if kind is MountKind.BIND:
        source_path = os.path.expanduser(source or "")
        if flag == "--mount-dir" and os.path.exists(source_path) and not os.path.isdir(source_path):
            raise InvalidConfigError(f"{flag}: {source!r} is not a directory (use --mount-file)")
        if flag == "--mount-file" and os.path.isdir(source_path):
            raise InvalidConfigError(f"{flag}: {source!r} is a directory (use --mount-dir)")
        kwargs["bind"] = source_path
    elif kind is MountKind.NAMED:
        kwargs["named"] = source
    elif kind is MountKind.DISK:
        kwargs["disk"] = os.path.expanduser(source or "")
    return guest, MountConfig(kind, **kwargs)  # type: ignore[arg-type]


def parse_mount_flags(pairs: list[tuple[str, str]]) -> dict[str, MountConfig]:
    """All of a command line's mount flags, in order; two mounts at one guest path are refused."""
    mounts: dict[str, MountConfig] = {}
    for flag, spec in pairs:
        guest, config = parse_mount_flag(flag, spec)
        if guest in mounts:
            raise InvalidConfigError(f"{flag} {spec!r}: {guest} is already mounted by an earlier flag")
        mounts[guest] = config
    return mounts
