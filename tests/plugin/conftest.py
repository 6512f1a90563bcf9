"""The plugin's end-to-end tests run their inner suites under both backends: ``namespace`` here, ``vm`` where KVM runs
guests (inside the nested rig on hosts without hardware KVM)."""

from __future__ import annotations

import pytest

from pytest_microsandbox.sandbox._namespace_backend import namespaces_unavailable
from tests.timeouts import BOOT


@pytest.fixture(params=["namespace", pytest.param("vm", marks=pytest.mark.vm)])
def isolation_args(request: pytest.FixtureRequest) -> list[str]:
    """The inner run's command-line options choosing the backend (and, for vm, the boot timeout of this host)."""
    if request.param == "namespace":
        if namespaces_unavailable():
            pytest.skip(str(namespaces_unavailable()))
        return ["--msb-isolation=namespace"]
    return ["--msb-isolation=vm", f"--msb-boot-timeout={BOOT:g}"]
