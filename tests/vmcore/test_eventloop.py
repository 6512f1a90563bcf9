from __future__ import annotations

import os
import threading

from _vmcore.eventloop import EventLoop
from _vmcore.kvm import new_eventfd


def test_handler_runs_when_signalled_and_errors_are_kept():
    loop = EventLoop()
    fired = threading.Event()
    a, b = new_eventfd(nonblocking=True), new_eventfd(nonblocking=True)
    loop.add(a, fired.set)
    loop.add(b, lambda: 1 / 0)
    loop.start()
    try:
        os.write(b, (1).to_bytes(8, "little"))
        os.write(a, (1).to_bytes(8, "little"))
        assert fired.wait(5)
    finally:
        loop.close()
        os.close(a)
        os.close(b)
    assert loop.errors and "ZeroDivisionError" in loop.errors[0]
