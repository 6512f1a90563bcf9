"""Shared by the examples in this repository only: our own CI machines have no hardware KVM (their /dev/kvm is
kvm_pvm), so there the examples run their sandboxes as Linux namespaces, chosen here explicitly. On a laptop or runner
with hardware KVM they run as microVMs. When you copy an example, leave this file behind."""

from _vmcore.host import detect_kvm


def pytest_microsandbox_sandbox_config(config, request, options):
    if not detect_kvm().runs_guest_userspace and config.getoption("msb_isolation") is None:
        options["isolation"] = "namespace"
