"""Test-suite wide rules for ``vm`` tests: where this host has hardware KVM they run here; elsewhere they run inside
the nested rig (tests/rig: real KVM under QEMU's emulation) and are reported here by name; where neither works they
are skipped with the exact reason (a failure with ``MSB_REQUIRE_KVM=1`` or on CI)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from _vmcore.host import detect_kvm
from tests.rig.delegate import NestedRig, wanted

pytest_plugins = ["pytester"]

_KVM = detect_kvm()
_RIG_PLUGIN = "msb-nested-rig"
# Debian keeps e2fsprogs' tools (mke2fs, debugfs, dumpe2fs) in /usr/sbin, off a normal user's PATH; the tests run
# them by name. (The product looks in /usr/sbin and /sbin by itself.)
os.environ["PATH"] = os.pathsep.join([os.environ.get("PATH", ""), *(d for d in ("/usr/sbin", "/sbin")
                                                                    if d not in os.environ.get("PATH", "").split(":"))])


def pytest_configure(config: pytest.Config) -> None:
    if not _KVM.runs_guest_userspace and wanted(config) is None:
        config.pluginmanager.register(NestedRig(config), _RIG_PLUGIN)


@pytest.fixture(scope="session")
def session_templates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One snapshot template cache for the session's fresh homes: a configuration's template is built once, not once
    per test (the cache is made to be shared: a lock per template, built in a temporary sibling, renamed into place).
    Tests of the template cache itself use their own."""
    return tmp_path_factory.mktemp("templates")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("vm") is None or _KVM.runs_guest_userspace:
        return
    message = f"needs hardware KVM: {_KVM.reason}"
    rig = item.config.pluginmanager.get_plugin(_RIG_PLUGIN)
    why_not = rig.error if rig is not None and rig.error else wanted(item.config)
    if why_not:
        message += f"; nested rig not used: {why_not}"
    if os.environ.get("MSB_REQUIRE_KVM") == "1" or (rig is not None and rig.error and os.environ.get("CI")):
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
