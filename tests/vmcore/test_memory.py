from __future__ import annotations

import pytest

from _vmcore.errors import GuestMemoryError
from _vmcore.memory import GuestMemory


def test_read_write_round_trip(mem):
    mem.write(0x1000, b"hello")
    mem.write_u32(0x2000, 0xDEADBEEF)
    mem.write_u64(0x2008, 1 << 63)
    assert mem.read(0x1000, 5) == b"hello"
    assert mem.read_u32(0x2000) == 0xDEADBEEF
    assert mem.read_u64(0x2008) == 1 << 63
    assert mem.read_u16(0x2000) == 0xBEEF


@pytest.mark.parametrize(
    "gpa,length",
    [(1 << 20, 1), ((1 << 20) - 4, 8), (2**64 - 1, 2), (2**63, 2**63), (0, (1 << 20) + 1)],
    ids=["past-end", "straddles-end", "wraps-64-bit", "huge", "longer-than-ram"],
)
def test_out_of_range_is_refused(mem, gpa, length):
    assert not mem.check(gpa, length)
    with pytest.raises(GuestMemoryError):
        mem.read(gpa, length)


@pytest.mark.parametrize("gpa", [(1 << 20) - 4, 1 << 20, 2**64 - 2])
def test_out_of_range_write_is_refused(mem, gpa):
    with pytest.raises(GuestMemoryError):
        mem.write(gpa, b"12345678")
    with pytest.raises(GuestMemoryError):
        mem.write_u64(gpa, 1)


def test_last_byte_is_reachable(mem):
    mem.write_u8(mem.size - 1, 7)
    assert mem.read_u8(mem.size - 1) == 7


def test_size_must_be_page_multiple():
    with pytest.raises(GuestMemoryError):
        GuestMemory(1000)


def test_from_file_is_copy_on_write(tmp_path):
    path = tmp_path / "snapshot.mem"
    path.write_bytes(b"A" * 8192)
    m = GuestMemory.from_file(path, 8192)
    assert m.kind == "file" and m.read(0, 4) == b"AAAA"
    m.write(0, b"BBBB")
    assert m.read(0, 4) == b"BBBB"
    m.close()
    assert path.read_bytes()[:4] == b"AAAA"


def test_closed_memory_refuses_access(mem):
    mem.close()
    assert not mem.check(0, 1)
    with pytest.raises(GuestMemoryError):
        mem.read(0, 1)
