"""Test-suite wide rules: ``vm`` tests need hardware KVM and are skipped with the exact reason elsewhere
(``MSB_REQUIRE_KVM=1`` makes that a failure instead)."""

from __future__ import annotations

import os

import pytest

from _vmcore.host import detect_kvm

pytest_plugins = ["pytester"]

_KVM = detect_kvm()


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("vm") is None or _KVM.runs_guest_userspace:
        return
    message = f"needs hardware KVM: {_KVM.reason}"
    if os.environ.get("MSB_REQUIRE_KVM") == "1":
        pytest.fail(f"MSB_REQUIRE_KVM=1 and {message}", pytrace=False)
    pytest.skip(message)
