"""What this host offers sandboxes, as the faces (the plugin, ``msb``) show it: its kind of KVM, its guest kernel,
the namespace backend's limits, where state lives, and host mounts of volumes."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path

from _vmcore.host import KvmKind, KvmStatus, detect_kvm
from pytest_microsandbox._home import msb_home

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (``msb`` starts cold every time)
if TYPE_CHECKING:
    from pytest_microsandbox.volumes import VolumeHandle

__all__ = ["KvmKind", "KvmStatus", "guest_kernel", "kvm_status", "mount_on_host", "msb_home", "namespace_limits"]


def kvm_status() -> KvmStatus:
    """Whether this host runs vm sandboxes: hardware KVM, the kvm_pvm software hypervisor (kernels only), or none."""
    return detect_kvm()


def guest_kernel(explicit: str | None = None) -> str:
    """The guest kernel vm sandboxes boot: ``explicit``, else the system's libkrunfw, else the ``microsandbox``
    wheel's copy. Raises BootError saying how to provide one."""
    from pytest_microsandbox._kernel import find_guest_kernel

    return str(find_guest_kernel(explicit))


def namespace_limits() -> str:
    """Which resource limits the namespace backend can enforce on this host, in words."""
    from pytest_microsandbox.sandbox._namespace_backend import namespace_limits as limits

    return limits()


def mount_on_host(name: str, mountpoint: str | os.PathLike[str], *, home: Path, readonly: bool = False,
                  allow_other: bool = False) -> AbstractContextManager[VolumeHandle]:
    """Serve the directory volume ``name`` at ``mountpoint`` until the ``with`` block ends; the volume counts as
    mounted meanwhile (``msb volume rm`` refuses). Raises VolumeError where this host cannot mount FUSE."""
    from pytest_microsandbox.volumes._host_mount import mount_on_host as mount

    return mount(name, mountpoint, home=home, readonly=readonly, allow_other=allow_other)
