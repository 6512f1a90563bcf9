"""The split virtqueue against well-formed and malformed chains built by the harness in guest memory."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _vmcore.devices.virtqueue import Virtqueue
from _vmcore.errors import VirtqueueError
from tests.vmcore.harness import F_INDIRECT, F_NEXT, F_WRITE, Buf, QueueDriver


def make_queue(mem, alloc, size=8, event_idx=False):
    drv = QueueDriver(mem, alloc, size)
    q = Virtqueue(size)
    q.desc_addr, q.avail_addr, q.used_addr = drv.desc, drv.avail, drv.used
    q.event_idx = event_idx
    q.attach(mem)
    return drv, q


def test_empty_queue_pops_nothing(mem, alloc):
    _, q = make_queue(mem, alloc)
    assert q.pop() is None and q.pending() == 0


@pytest.mark.parametrize("indirect", [False, True], ids=["direct", "indirect"])
def test_chain_segments_and_used_ring(mem, alloc, indirect):
    drv, q = make_queue(mem, alloc)
    head = drv.add_chain([Buf.out(b"header"), Buf.out(b"body"), Buf.into(32), Buf.into(1)], indirect=indirect)
    chain = q.pop()
    assert chain.head == head
    assert [(length, w) for _, length, w in chain.segments] == [(6, False), (4, False), (32, True), (1, True)]
    assert chain.readable_len == 10 and chain.writable_len == 33
    assert chain.read_readable() == b"headerbody"
    assert chain.read_readable(4, 4) == b"erbo"
    assert chain.write_writable(30, b"xyz") == 3
    q.add_used(chain.head, 3)
    assert drv.used_entries() == [(head, 3)]
    assert drv.read_buffer(head, 2)[30:] == b"xy" and drv.read_buffer(head, 3) == b"z"
    assert q.pop() is None


def test_ring_wraps_around(mem, alloc):
    drv, q = make_queue(mem, alloc, size=4)
    for i in range(10):
        head = drv.add_chain([Buf.out(bytes([i]))])
        chain = q.pop()
        assert chain.read_readable() == bytes([i])
        q.add_used(head, 0)
    assert len(drv.used_entries()) == 10


def test_write_is_bounded_by_writable_space(mem, alloc):
    drv, q = make_queue(mem, alloc)
    drv.add_chain([Buf.out(b"r"), Buf.into(4)])
    chain = q.pop()
    assert chain.write_writable(0, b"0123456789") == 4
    assert mem.read(chain.segments[0][0], 1) == b"r"  # the readable buffer is never written


def malformed(drv, build):
    build(drv)
    drv.publish(0)


CASES = {
    "address-outside-ram": lambda d: d.write_descriptor(0, (1 << 20) - 8, 64),
    "address-wraps": lambda d: d.write_descriptor(0, 2**64 - 16, 64),
    "zero-length": lambda d: d.write_descriptor(0, 0x8000, 0),
    "loop": lambda d: (d.write_descriptor(0, 0x8000, 8, F_NEXT, 1), d.write_descriptor(1, 0x8000, 8, F_NEXT, 0)),
    "self-loop": lambda d: d.write_descriptor(0, 0x8000, 8, F_NEXT, 0),
    "next-out-of-range": lambda d: d.write_descriptor(0, 0x8000, 8, F_NEXT, 200),
    "readable-after-writable": lambda d: (d.write_descriptor(0, 0x8000, 8, F_WRITE | F_NEXT, 1),
                                          d.write_descriptor(1, 0x9000, 8, 0)),
    "indirect-with-next": lambda d: d.write_descriptor(0, 0x8000, 32, F_INDIRECT | F_NEXT, 1),
    "indirect-bad-length": lambda d: d.write_descriptor(0, 0x8000, 24, F_INDIRECT),
    "indirect-zero-length": lambda d: d.write_descriptor(0, 0x8000, 0, F_INDIRECT),
    "indirect-table-outside-ram": lambda d: d.write_descriptor(0, (1 << 20) - 16, 64, F_INDIRECT),
    "indirect-too-many-descriptors": lambda d: d.write_descriptor(0, 0x8000, 16 * 2048, F_INDIRECT),
    "nested-indirect": lambda d: (d.write_descriptor(0, 0x8000, 16, F_INDIRECT),
                                  d.write_descriptor(0, 0x9000, 16, F_INDIRECT, table=0x8000)),
    "indirect-loop": lambda d: (d.write_descriptor(0, 0x8000, 32, F_INDIRECT),
                                d.write_descriptor(0, 0x9000, 8, F_NEXT, 1, table=0x8000),
                                d.write_descriptor(1, 0x9000, 8, F_NEXT, 0, table=0x8000)),
    "indirect-buffer-outside-ram": lambda d: (d.write_descriptor(0, 0x8000, 16, F_INDIRECT),
                                              d.write_descriptor(0, 1 << 40, 8, 0, table=0x8000)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_malformed_chain_raises(mem, alloc, case):
    drv, q = make_queue(mem, alloc)
    alloc.next = max(alloc.next, 0xA000)
    malformed(drv, CASES[case])
    before = mem.read(0, mem.size)
    with pytest.raises(VirtqueueError):
        q.pop()
    assert mem.read(0, mem.size) == before  # a refused chain leaves guest memory untouched


def test_too_many_descriptors_in_a_direct_chain(mem, alloc):
    drv, q = make_queue(mem, alloc, size=4)
    for i in range(4):
        drv.write_descriptor(i, 0x8000, 8, F_NEXT, (i + 1) % 4)
    drv.publish(0)
    with pytest.raises(VirtqueueError, match="loop"):
        q.pop()


def test_avail_index_jump_is_refused(mem, alloc):
    drv, q = make_queue(mem, alloc, size=4)
    mem.write_u16(drv.avail + 2, 9)
    with pytest.raises(VirtqueueError, match="more than the queue size"):
        q.pop()


def test_rings_outside_ram_refused_at_attach(mem):
    q = Virtqueue(8)
    q.desc_addr, q.avail_addr, q.used_addr = (1 << 20) - 64, 0x1000, 0x2000
    with pytest.raises(VirtqueueError, match="descriptor table"):
        q.attach(mem)
    q.desc_addr, q.size = 0x3000, 6
    with pytest.raises(VirtqueueError, match="power of two"):
        q.attach(mem)


def test_interrupt_suppression_without_event_idx(mem, alloc):
    drv, q = make_queue(mem, alloc)
    head = drv.add_chain([Buf.into(4)])
    q.add_used(q.pop().head, 0)
    assert q.needs_interrupt()
    mem.write_u16(drv.avail, 1)  # VRING_AVAIL_F_NO_INTERRUPT
    assert not q.needs_interrupt()
    assert drv.used_entries() == [(head, 0)]


def test_event_idx(mem, alloc):
    drv, q = make_queue(mem, alloc, event_idx=True)
    for _ in range(3):
        drv.add_chain([Buf.into(4)])
    drv.set_used_event(2)  # interrupt me once the used index passes 2
    for expected in (True, False, True):  # the first is always signalled; then 2 only when crossing used_event
        q.add_used(q.pop().head, 0)
        assert q.needs_interrupt() is expected
    assert drv.avail_event() == 3  # the device published how far it has read


def test_state_round_trip(mem, alloc):
    drv, q = make_queue(mem, alloc)
    drv.add_chain([Buf.out(b"x")])
    q.add_used(q.pop().head, 0)
    q2 = Virtqueue(8)
    q2.set_state(q.state())
    q2.attach(mem)
    assert q2.state() == q.state()
    assert q2.pop() is None


DESCRIPTOR = st.tuples(
    st.one_of(st.integers(0, (1 << 20) + 64), st.integers(0, 2**64 - 1)),  # address: mostly near guest RAM
    st.one_of(st.integers(0, 64), st.integers(0, 2**32 - 1)),  # length
    st.integers(0, 7),  # NEXT | WRITE | INDIRECT
    st.integers(0, 12),  # next, sometimes out of range
).map(lambda d: struct.pack("<QIHH", *d))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=st.lists(DESCRIPTOR, min_size=8, max_size=8).map(b"".join), head=st.integers(0, 9),
       avail_idx=st.integers(0, 0xFFFF), event_idx=st.booleans())
def test_random_rings_never_escape_guest_memory(mem, table, head, avail_idx, event_idx):
    """Whatever the driver writes, pop() yields in-RAM segments or raises VirtqueueError: nothing else."""
    q = Virtqueue(8)
    q.desc_addr, q.avail_addr, q.used_addr = 0x1000, 0x2000, 0x3000
    q.event_idx = event_idx
    q.attach(mem)
    mem.write(0x1000, table)
    mem.write_u16(0x2002, avail_idx)
    for slot in range(8):
        mem.write_u16(0x2004 + 2 * slot, head)
    for _ in range(3):
        try:
            chain = q.pop()
        except VirtqueueError:
            return
        if chain is None:
            return
        assert chain.segments and len(chain.segments) <= 1024
        for addr, length, _ in chain.segments:
            assert length > 0 and mem.check(addr, length)
        q.add_used(chain.head, 0)
