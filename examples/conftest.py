"""Shared by the examples in this repository only: our own CI machines have no hardware KVM (their /dev/kvm is
kvm_pvm), so there the examples run their sandboxes as Linux namespaces, chosen here explicitly. On a laptop or runner
with hardware KVM they run as microVMs. When you copy an example, leave this file behind."""

import os

import pytest

from _vmcore.host import detect_kvm

NAMESPACES_INSTEAD = not detect_kvm().runs_guest_userspace


def pytest_microsandbox_sandbox_config(config, request, options):
    if NAMESPACES_INSTEAD and config.getoption("msb_isolation") is None:
        options["isolation"] = "namespace"


def pytest_runtest_setup(item):
    # A normal user's namespace sandbox sees the host's /usr as owned by nobody (real root is outside its user
    # namespace), so nothing can install there; a microVM, or root, can.
    if (item.path.parent.name == "installer" and NAMESPACES_INSTEAD and os.geteuid() != 0
            and item.config.getoption("msb_isolation") in (None, "namespace")):
        pytest.skip("installing into /usr in a namespace sandbox needs root; a microVM needs nothing")
