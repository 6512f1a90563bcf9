from __future__ import annotations

import pytest

from _vmcore.memory import GuestMemory
from tests.vmcore.harness import Allocator

MEM_SIZE = 1 << 20


@pytest.fixture
def mem() -> GuestMemory:
    m = GuestMemory(MEM_SIZE)
    yield m
    m.close()


@pytest.fixture
def alloc() -> Allocator:
    return Allocator(0x1000, MEM_SIZE)
