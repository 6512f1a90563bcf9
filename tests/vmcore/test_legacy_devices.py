from __future__ import annotations

from _vmcore.bus import Bus
from _vmcore.devices.cmos import Cmos
from _vmcore.devices.i8042 import I8042
from _vmcore.devices.uart8250 import Uart8250


def test_i8042_reset_and_status():
    calls = []
    dev = I8042(on_reset=lambda: calls.append(1))
    assert dev.read(4, 1) == 0
    dev.write(4, 1, 0xAA)
    dev.write(4, 1, 0xFE)
    assert calls == [1] and dev.resets == 1


def test_cmos_never_reads_all_ones():
    c = Cmos()
    for reg in range(0x80):
        c.write(0, 1, reg)
        assert c.read(1, 1) != 0xFF
    c.write(0, 1, 0x0A)
    assert not c.read(1, 1) & 0x80  # update not in progress


def test_uart_transmits_and_keeps_divisor():
    out = []
    u = Uart8250(out.append)
    u.write(3, 1, 0x80)  # DLAB on
    u.write(0, 1, 3)
    assert u.read(0, 1) == 3
    u.write(3, 1, 0x03)
    u.write(0, 1, ord("A"))
    assert out == [b"A"] and u.read(5, 1) & 0x20


def test_bus_routes_and_reports_unclaimed():
    bus = Bus("pio")
    dev = I8042()
    bus.insert(0x60, 5, dev)
    assert bus.read(0x64, 1) == 0
    assert bus.read(0x80, 2) == 0xFFFF and bus.unhandled == 1
    try:
        bus.insert(0x62, 4, Cmos())
    except ValueError as e:
        assert "overlaps" in str(e)
    else:
        raise AssertionError("overlapping insert accepted")
