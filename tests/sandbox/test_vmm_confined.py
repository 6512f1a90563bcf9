"""Every VMM process runs jailed (``_vmcore.jail``) and confined (``_vmcore.confine``) while its guest runs, and the
guest works as before."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm


@pytest.mark.parametrize("isolation", [pytest.param("vm", marks=pytest.mark.vm)])
def test_the_vmm_runs_with_no_new_privs_and_a_seccomp_filter(make_sandbox) -> None:
    sb = make_sandbox()
    status = dict(line.split(":\t", 1) for line in Path(f"/proc/{sb.pid}/status").read_text().splitlines()
                  if ":\t" in line)
    assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
    assert int(status["CapPrm"], 16) & ~0x10000DF == 0  # only what its FUSE servers use, even as root
    assert "msb-vmm: confined" in sb.console_tail(200)
    assert "msb-vmm: jailed: own mount namespace" in sb.console_tail(200)
    assert os.readlink(f"/proc/{sb.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert sb.exec("sh", "-c", "echo works").stdout == "works\n"
