from __future__ import annotations

import struct

import pytest

from _vmcore.mptable import MPTABLE_ADDR, build_mptable


@pytest.mark.parametrize("vcpus", [1, 2, 8, 32])
def test_checksums_and_processors(vcpus):
    t = build_mptable(vcpus)
    assert t[:4] == b"_MP_" and sum(t[:16]) & 0xFF == 0
    (config_addr,) = struct.unpack_from("<I", t, 4)
    assert config_addr == MPTABLE_ADDR + 16
    cfg = t[16:]
    length, count = struct.unpack_from("<H", cfg, 4)[0], struct.unpack_from("<H", cfg, 34)[0]
    assert cfg[:4] == b"PCMP" and length == len(cfg) and sum(cfg) & 0xFF == 0
    procs = [cfg[44 + 20 * i : 44 + 20 * (i + 1)] for i in range(vcpus)]
    assert [p[1] for p in procs] == list(range(vcpus))  # APIC ids
    assert procs[0][3] == 3 and all(p[3] == 1 for p in procs[1:])  # only vCPU 0 is the bootstrap processor
    assert count == vcpus + 2 + 16 + 2


def test_too_many_vcpus():
    with pytest.raises(ValueError):
        build_mptable(33)
