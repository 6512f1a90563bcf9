"""Which backend a sandbox gets: the one asked for, or ``vm``; never a silent fallback to the weaker one."""

from __future__ import annotations

from _vmcore.host import detect_kvm
from pytest_microsandbox.errors import KvmUnavailableError
from pytest_microsandbox.sandbox._backend import Backend
from pytest_microsandbox.sandbox._config import Isolation


def backend_for(isolation: Isolation) -> Backend:
    if isolation == Isolation.NAMESPACE:
        from pytest_microsandbox.sandbox._namespace_backend import NamespaceBackend

        return NamespaceBackend()
    kvm = detect_kvm()
    if not kvm.runs_guest_userspace:
        raise KvmUnavailableError(
            f"the vm backend needs hardware KVM, and this host has {kvm.kind}: {kvm.reason}. "
            "To run sandboxes as Linux namespaces instead (weaker isolation: they share the host kernel), opt in "
            "with isolation='namespace' (pytest: --msb-isolation=namespace, or MSB_ISOLATION=namespace)"
        )
    from pytest_microsandbox.sandbox._vm_backend import VmBackend

    return VmBackend()
