"""Validation of user-supplied names and sizes, with the errors DESIGN.md promises."""

from __future__ import annotations

import re

from pytest_microsandbox.errors import InvalidConfigError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")
MAX_NAME_BYTES = 128
_SIZE = re.compile(r"(?P<number>\d+)(?P<unit>[KMGT]i?B?|B)?\Z", re.IGNORECASE)
_UNIT_BYTES = {"": 1 << 20, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def validate_volume_name(name: object) -> str:
    """A volume name: ASCII alphanumeric first, then ``[A-Za-z0-9._-]``, at most 128 bytes."""
    if not isinstance(name, str):
        raise InvalidConfigError(f"volume name must be a string, not {type(name).__name__}")
    if not name:
        raise InvalidConfigError("volume name must not be empty")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise InvalidConfigError(f"volume name is longer than {MAX_NAME_BYTES} bytes: {name[:40]!r}...")
    if not _NAME.match(name):
        raise InvalidConfigError(
            f"invalid volume name {name!r}: it must start with an ASCII letter or digit and contain only "
            "letters, digits, '.', '_' and '-'"
        )
    return name


def validate_mib(value: object, what: str, *, allow_none: bool = True) -> int | None:
    """A positive whole number of MiB (``bool`` is refused even though it is an int)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidConfigError(f"{what} must be a whole number of MiB, not {value!r}")
    if value <= 0:
        raise InvalidConfigError(f"{what} must be positive, not {value}")
    return value


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def parse_bool(text: str, what: str) -> bool:
    """A switch given as text (an option's or an environment variable's value): 1/true/yes/on or 0/false/no/off
    (empty: false), in any case."""
    value = text.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise InvalidConfigError(f"{what} must be true or false, not {text!r}")


def parse_positive_int(text: str, what: str) -> int:
    """A positive whole number given as text (an option's or an environment variable's value)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise InvalidConfigError(f"{what} must be a positive number, not {text!r}")
    return value


def parse_size_bytes(text: str, what: str = "size") -> int:
    """Parse ``1048576`` (bytes), ``512K``, ``16G``, ``2GiB`` into a positive number of bytes."""
    match = _SIZE.match(text.strip())
    unit = ((match["unit"] or "B") if match else "")[:1].upper()
    if not match or int(match["number"]) < 1:
        raise InvalidConfigError(f"invalid {what} {text!r}: use a number of bytes or a size like 512M, 16G")
    return int(match["number"]) * _UNIT_BYTES[unit]


def parse_size_mib(text: str, what: str = "size") -> int:
    """Parse ``100`` (MiB), ``512M``, ``1G``, ``2GiB``, ``1048576K`` into whole MiB."""
    match = _SIZE.match(text.strip())
    if not match:
        raise InvalidConfigError(f"invalid {what} {text!r}: use a number of MiB or a size like 512M, 1G")
    unit = (match["unit"] or "")[:1].upper()
    size = int(match["number"]) * _UNIT_BYTES[unit]
    if size % (1 << 20):
        raise InvalidConfigError(f"invalid {what} {text!r}: it must be a whole number of MiB")
    return validate_mib(size >> 20, what, allow_none=False)  # type: ignore[return-value]
