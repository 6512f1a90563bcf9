"""virtio-console in multiport mode: the control handshake, hvc0 output, and the agent port's byte stream."""

from __future__ import annotations

import struct
import time

import pytest

from _vmcore.devices.virtio_console import F_MULTIPORT, VirtioConsole
from _vmcore.devices.virtio_mmio import MmioTransport
from tests.vmcore.harness import Buf, MmioDriver

CTRL = struct.Struct("<IHH")
DEVICE_READY, DEVICE_ADD, PORT_READY, CONSOLE_PORT, PORT_OPEN, PORT_NAME = 0, 1, 3, 4, 6, 7
PORT0_RX, PORT0_TX, CTRL_RX, CTRL_TX, AGENT_RX, AGENT_TX = 0, 1, 2, 3, 4, 5


@pytest.fixture
def console(mem, alloc):
    out = []
    dev = VirtioConsole(["agent"], console_sink=out.append)
    transport = MmioTransport(dev, mem)
    drv = MmioDriver(transport, mem, alloc)
    drv.setup(6)
    yield dev, drv, out
    dev.close()


def control_messages(drv, heads):
    q = drv.queues[CTRL_RX]
    used = dict(q.used_entries())
    msgs = []
    for h in heads:
        if h in used:
            raw = q.read_buffer(h, 0)[: used[h]]
            msgs.append((*CTRL.unpack(raw[:8]), raw[8:]))
    return msgs


def send_control(drv, port, event, value):
    drv.queues[CTRL_TX].add_chain([Buf.out(CTRL.pack(port, event, value))])
    drv.notify(CTRL_TX)


def test_config_and_features(console):
    dev, drv, _ = console
    assert drv.rd(0x8) == 3
    assert drv.device_features() & F_MULTIPORT
    assert drv.config(4, 4) == 2  # max_nr_ports: console + agent


def test_multiport_handshake(console):
    dev, drv, _ = console
    heads = [drv.queues[CTRL_RX].add_chain([Buf.into(64)]) for _ in range(8)]
    drv.notify(CTRL_RX)
    send_control(drv, 0, DEVICE_READY, 1)
    send_control(drv, 0, PORT_READY, 1)
    send_control(drv, 1, PORT_READY, 1)
    msgs = control_messages(drv, heads)
    assert msgs == [
        (0, DEVICE_ADD, 1, b""),
        (1, DEVICE_ADD, 1, b""),
        (0, CONSOLE_PORT, 1, b""),
        (0, PORT_OPEN, 1, b""),
        (1, PORT_NAME, 1, b"agent"),
        (1, PORT_OPEN, 1, b""),
    ]


def test_control_messages_wait_for_buffers(console):
    dev, drv, _ = console
    send_control(drv, 0, DEVICE_READY, 1)  # no control receive buffer yet: replies are kept
    heads = [drv.queues[CTRL_RX].add_chain([Buf.into(64)]) for _ in range(2)]
    drv.notify(CTRL_RX)
    assert [m[:2] for m in control_messages(drv, heads)] == [(0, DEVICE_ADD), (1, DEVICE_ADD)]


def test_console_output_reaches_sink(console):
    dev, drv, out = console
    drv.queues[PORT0_TX].add_chain([Buf.out(b"Linux version "), Buf.out(b"6.12\n")])
    drv.notify(PORT0_TX)
    assert b"".join(out) == b"Linux version 6.12\n"


def test_agent_port_is_a_host_byte_stream(console):
    dev, drv, _ = console
    sock = dev.host_socket("agent")
    sock.settimeout(5)
    drv.queues[AGENT_TX].add_chain([Buf.out(b"\x00\x00\x00\x05hello")])
    drv.notify(AGENT_TX)
    assert sock.recv(100) == b"\x00\x00\x00\x05hello"

    send_control(drv, 1, PORT_OPEN, 1)  # the agent opened its port
    q = drv.queues[AGENT_RX]
    heads = [q.add_chain([Buf.into(4)]) for _ in range(3)]
    drv.notify(AGENT_RX)
    sock.sendall(b"from-host!")  # 10 bytes into three 4-byte buffers
    deadline = time.monotonic() + 5
    got = []
    while len(got) < 3 and time.monotonic() < deadline:
        got += q.used_entries()
        time.sleep(0.01)
    assert [h for h, _ in got] == heads and [n for _, n in got] == [4, 4, 2]
    assert b"".join(q.read_buffer(h, 0)[:n] for h, n in got) == b"from-host!"


def test_host_bytes_wait_until_the_guest_opens_the_port(console):
    """Linux's driver drops what arrives on a port nobody has open: the host's early bytes must wait for the open."""
    dev, drv, _ = console
    q = drv.queues[AGENT_RX]
    heads = [q.add_chain([Buf.into(16)]) for _ in range(2)]
    drv.notify(AGENT_RX)
    dev.host_socket("agent").sendall(b"early")
    deadline = time.monotonic() + 5
    while dev.ports[1].pending != b"early" and time.monotonic() < deadline:  # the host pump feeds the device
        time.sleep(0.01)
    assert dev.ports[1].pending == b"early" and q.used_entries() == []
    send_control(drv, 1, PORT_OPEN, 1)
    [(head, n)] = q.used_entries()
    assert head == heads[0] and q.read_buffer(head, 0)[:n] == b"early"


def test_an_attached_socket_carries_the_port_both_ways_after_what_came_before(console):
    """``attach``: the host's own socket takes the port over (no relay): the guest's bytes written before, still
    unread on the socketpair, reach it first, then new ones; its bytes reach the guest; its close is reported."""
    import socket

    dev, drv, _ = console
    drv.queues[AGENT_TX].add_chain([Buf.out(b"before|")])
    drv.notify(AGENT_TX)
    owner, vmm_end = socket.socketpair()
    owner.settimeout(5)
    ended = dev.attach("agent", vmm_end)
    drv.queues[AGENT_TX].add_chain([Buf.out(b"after")])
    drv.notify(AGENT_TX)
    got = b""
    while len(got) < len(b"before|after"):
        got += owner.recv(100)
    assert got == b"before|after"

    send_control(drv, 1, PORT_OPEN, 1)
    q = drv.queues[AGENT_RX]
    head = q.add_chain([Buf.into(16)])
    drv.notify(AGENT_RX)
    owner.sendall(b"to-guest")
    deadline = time.monotonic() + 5
    entries = []
    while not entries and time.monotonic() < deadline:
        entries = q.used_entries()
        time.sleep(0.01)
    [(used, n)] = entries
    assert used == head and q.read_buffer(head, 0)[:n] == b"to-guest"
    assert not ended.is_set()
    owner.close()
    assert ended.wait(5)


def test_unknown_port_name(console):
    dev, _, _ = console
    with pytest.raises(KeyError):
        dev.host_socket("nope")


def test_malformed_transmit_chain_breaks_device(console, mem):
    dev, drv, out = console
    q = drv.queues[PORT0_TX]
    q.write_descriptor(0, mem.size - 4, 64)
    q.publish(0)
    drv.notify(PORT0_TX)
    assert drv.needs_reset and "outside guest RAM" in dev.error
    assert out == []


def test_without_named_ports_there_is_no_multiport(mem, alloc):
    out = []
    dev = VirtioConsole([], console_sink=out.append)
    drv = MmioDriver(MmioTransport(dev, mem), mem, alloc)
    drv.setup(2)
    assert not drv.device_features() & F_MULTIPORT and len(dev.queues) == 2
    drv.queues[PORT0_TX].add_chain([Buf.out(b"early\n")], indirect=True)
    drv.notify(PORT0_TX)
    assert out == [b"early\n"]
    dev.close()
