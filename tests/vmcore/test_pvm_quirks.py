from __future__ import annotations

import pytest

from _vmcore.pvm_quirks import INT3, SKIP, classify, modrm_length


@pytest.mark.parametrize(
    "code,expected",
    [
        (bytes.fromhex("cc 90"), (INT3, 1)),
        (bytes.fromhex("9b db e3"), (SKIP, 1)),  # fwait; fninit
        (bytes.fromhex("0f ae 55 fc"), (SKIP, 4)),  # ldmxcsr [rbp-4]
        (bytes.fromhex("0f ae 14 24"), (SKIP, 4)),  # ldmxcsr [rsp]
        (bytes.fromhex("0f ae 15 10 20 30 40"), (SKIP, 7)),  # ldmxcsr [rip+disp32]
        (bytes.fromhex("41 0f ae 50 08"), (SKIP, 5)),  # REX.B ldmxcsr [r8+8]
        (bytes.fromhex("0f ae 94 24 00 01 00 00"), (SKIP, 8)),  # ldmxcsr [rsp+0x100]
        (bytes.fromhex("c5 f8 ae 55 fc"), (SKIP, 5)),  # vldmxcsr [rbp-4]
        (bytes.fromhex("f2 48 0f 38 f1 06"), None),  # crc32: unknown, a real failure
        (bytes.fromhex("0f ae 5d fc"), None),  # stmxcsr is not skipped
        (bytes.fromhex("0f ae"), None),  # truncated
        (b"", None),
        (bytes.fromhex("66 66"), None),  # prefixes only
    ],
)
def test_classify(code, expected):
    assert classify(code) == expected


def test_modrm_truncated_displacement():
    assert modrm_length(bytes.fromhex("94 24 00")) is None
    assert modrm_length(bytes.fromhex("c0")) == 1
