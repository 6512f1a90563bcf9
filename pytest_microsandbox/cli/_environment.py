"""The one place ``msb`` reads its settings from the environment (``MSB_ISOLATION``, ``MSB_KERNEL``,
``MSB_SNAPSHOTS``, ``MSB_SNAPSHOT_KEEP``), the same variables the pytest plugin reads; the library takes them as
arguments. (``MSB_HOME`` is the library's own default home, for every caller.)"""

from __future__ import annotations

import os

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (``msb`` starts cold every time)
if TYPE_CHECKING:
    from pytest_microsandbox.sandbox import VmOptions


def default_isolation() -> str:
    """``--isolation`` when the command line has none: ``MSB_ISOLATION``, else ``vm``."""
    return os.environ.get("MSB_ISOLATION") or "vm"


def default_kernel() -> str | None:
    """``--kernel`` when the command line has none: ``MSB_KERNEL``, else found automatically."""
    return os.environ.get("MSB_KERNEL") or None


def vm_options() -> VmOptions:
    """The vm backend's settings from ``MSB_KERNEL``, ``MSB_SNAPSHOTS`` and ``MSB_SNAPSHOT_KEEP``."""
    from pytest_microsandbox.sandbox import VmOptions
    from pytest_microsandbox.validation import parse_bool, parse_positive_int

    # empty: unset, as the plugin reads the environment
    snapshots = parse_bool(os.environ.get("MSB_SNAPSHOTS") or "true", "MSB_SNAPSHOTS")
    keep = os.environ.get("MSB_SNAPSHOT_KEEP", "").strip()
    return VmOptions(kernel=default_kernel(), snapshots=snapshots,
                     snapshot_keep=parse_positive_int(keep, "MSB_SNAPSHOT_KEEP") if keep else VmOptions.snapshot_keep)
