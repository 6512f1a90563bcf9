"""One background thread that waits (epoll) on eventfds and runs their handlers: where ioeventfd pays, a guest's
queue notify becomes an eventfd signal handled here, and the vCPU goes on running instead of exiting to us."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

from _vmcore.kvm import new_eventfd


class EventLoop:
    def __init__(self, name: str = "vmm-events") -> None:
        self._epoll = select.epoll()
        self._handlers: dict[int, Callable[[], None]] = {}
        self._wake = new_eventfd(nonblocking=True)
        self._epoll.register(self._wake, select.EPOLLIN)
        self._stopping = False
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def add(self, fd: int, handler: Callable[[], None]) -> None:
        """Call ``handler()`` (after draining the eventfd) each time ``fd`` is signalled."""
        self._handlers[fd] = handler
        self._epoll.register(fd, select.EPOLLIN)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            for fd, _ in self._epoll.poll():
                if fd == self._wake:
                    continue
                try:
                    os.read(fd, 8)
                except BlockingIOError:
                    continue
                try:
                    self._handlers[fd]()
                except Exception as e:  # a device bug must not end the loop for the others
                    self.errors.append(repr(e))

    def close(self) -> None:
        self._stopping = True
        os.write(self._wake, (1).to_bytes(8, "little"))
        if self._thread.is_alive():
            self._thread.join(5)
        self._epoll.close()
        os.close(self._wake)
