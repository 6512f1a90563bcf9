# cython: language_level=3
"""virtio-console (device type 3) with VIRTIO_CONSOLE_F_MULTIPORT: port 0 is the kernel console (hvc0), the
other ports are named (``/sys/class/virtio-ports/vportNpM/name`` in the guest, e.g. the agent's port).

Queues: 0/1 port 0 receive/transmit, 2/3 control receive/transmit, then 4+2k/5+2k for port k+1.
The control handshake (virtio 1.x, 5.3.6.2): the driver sends DEVICE_READY, we announce every port with
DEVICE_ADD; for each PORT_READY we answer CONSOLE_PORT (port 0), PORT_NAME and PORT_OPEN.

Without named ports the device offers no MULTIPORT: the kernel then makes hvc0 while it probes the device,
instead of after the control handshake (which a workqueue runs later), so fewer early messages are lost.

Host side: port 0's output goes to ``console_sink(bytes)``; a named port is a byte stream on a socketpair
(``host_socket(name)`` gives the host end), or on a socket of the host's own once ``attach``-ed. A reader thread
moves host bytes into the guest's receive buffers.
A lock guards queue state, since that thread and the vCPU thread both touch it.
"""

import os
import socket
import struct
import threading

from libc.stdint cimport uint16_t, uint32_t, uint64_t

from _vmcore.devices.virtqueue cimport Virtqueue, DescriptorChain
from _vmcore.devices.virtio_device cimport VirtioDevice

DEVICE_ID = 3
F_MULTIPORT = 1 << 1
QUEUE_SIZE = 256
CTRL_RX, CTRL_TX = 2, 3
DEVICE_READY, DEVICE_ADD, DEVICE_REMOVE, PORT_READY, CONSOLE_PORT, RESIZE, PORT_OPEN, PORT_NAME = range(8)
_CTRL = struct.Struct("<IHH")
RX_CHUNK = 65536


class ConsolePort:
    """One port: its name ("" for the console), the host end of its socketpair, what is waiting for the guest."""

    def __init__(self, index: int, name: str) -> None:
        self.index = index
        self.name = name
        self.guest_open = False
        self.pending = bytearray()
        self.host_sock: socket.socket | None = None
        self.device_sock: socket.socket | None = None
        self.reader: threading.Thread | None = None  # the thread moving host bytes to the guest

    @property
    def rx_queue(self) -> int:
        return 0 if self.index == 0 else 2 + 2 * self.index

    @property
    def tx_queue(self) -> int:
        return self.rx_queue + 1


cdef class VirtioConsole(VirtioDevice):
    """Port 0 is the console; ``port_names`` name the other ports, each backed by a host socketpair."""

    cdef readonly list ports
    cdef public object console_sink
    cdef list _ctrl_pending
    cdef object _lock
    cdef list _readers
    cdef bint _closed

    def __init__(self, port_names=(), console_sink=None):
        self.ports = [ConsolePort(0, "")] + [ConsolePort(i + 1, n) for i, n in enumerate(port_names)]
        multiport = len(self.ports) > 1
        nqueues = 4 + 2 * (len(self.ports) - 1) if multiport else 2
        super().__init__(DEVICE_ID, F_MULTIPORT if multiport else 0, [QUEUE_SIZE] * nqueues)
        self.console_sink = console_sink
        self._ctrl_pending = []
        self._lock = threading.RLock()
        self._readers = []
        self._closed = False
        for port in self.ports[1:]:
            port.host_sock, port.device_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            t = threading.Thread(target=self._pump_host, args=(port, port.device_sock, None), name=f"vcon-{port.name}",
                                 daemon=True)
            port.reader = t
            self._readers.append(t)
            t.start()

    def host_socket(self, str name) -> socket.socket:
        """The host end of the named port's byte stream (read what the guest writes, write what it reads)."""
        for port in self.ports[1:]:
            if port.name == name:
                return port.host_sock
        raise KeyError(f"no console port named {name!r}")

    def attach(self, str name, sock) -> object:
        """Serve the named port from ``sock`` from now on instead of its socketpair: what the guest writes goes
        straight to ``sock`` and what arrives on it straight to the guest, with no relay in between. What the guest
        wrote before and the socketpair's host end has not read yet is passed on first, in order. Returns an Event
        set when ``sock``'s other side has closed (``sock`` is the device's now: ``close`` closes it)."""
        port = next((p for p in self.ports[1:] if p.name == name), None)
        if port is None:
            raise KeyError(f"no console port named {name!r}")
        ended = threading.Event()
        with self._lock:  # no transmit while the stream changes hands
            old_host = port.host_sock
            old_host.setblocking(False)
            leftover = bytearray()
            while True:
                try:
                    chunk = old_host.recv(RX_CHUNK)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                leftover += chunk
            sock.setblocking(True)
            if leftover:
                sock.sendall(leftover)
            port.device_sock = sock
            old_host.shutdown(socket.SHUT_WR)  # its reader sees the end once it has delivered what came before
        if port.reader is not None:
            port.reader.join(5)  # so nothing from before reaches the guest after what comes on ``sock``
        t = threading.Thread(target=self._pump_host, args=(port, sock, ended), name=f"vcon-{port.name}",
                             daemon=True)
        port.reader = t
        self._readers.append(t)
        t.start()
        return ended

    def close(self) -> None:
        self._closed = True
        for port in self.ports[1:]:
            for s in (port.device_sock, port.host_sock):
                if s is not None:
                    try:
                        s.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    s.close()
        for t in self._readers:
            t.join(timeout=2)

    @property
    def lock(self):
        """Held while host input is written into guest memory: a snapshot holds it to see no half-delivered input."""
        return self._lock

    cpdef bytes config_bytes(self):
        return struct.pack("<HHII", 80, 25, len(self.ports), 0)

    cpdef void reset(self) except *:
        with self._lock:
            VirtioDevice.reset(self)
            self._ctrl_pending = []
            for port in self.ports:
                port.guest_open = False

    cpdef void process_queue(self, int index) except *:
        with self._lock:
            if index == CTRL_TX:
                self._control_from_guest()
            elif index == CTRL_RX:
                self._flush_control()
            else:
                port = self._port_of_queue(index)
                if port is None:
                    return
                if index == port.tx_queue:
                    self._transmit(port)
                else:
                    self._fill_rx(port)

    def _port_of_queue(self, int index):
        for port in self.ports:
            if index == port.rx_queue or index == port.tx_queue:
                return port
        return None

    cdef void _transmit(self, port) except *:
        cdef Virtqueue q = <Virtqueue>self.queues[port.tx_queue]
        cdef DescriptorChain chain
        while True:
            chain = q.pop()
            if chain is None:
                break
            data = chain.read_readable()
            q.add_used(chain.head, 0)
            if port.index == 0:
                if self.console_sink is not None:
                    self.console_sink(data)
            elif port.device_sock is not None:
                try:
                    port.device_sock.sendall(data)
                except OSError:
                    pass  # the host end went away: the guest's bytes are dropped, as on a closed tty
        self.signal_used(port.tx_queue)

    cdef void _fill_rx(self, port) except *:
        cdef Virtqueue q = <Virtqueue>self.queues[port.rx_queue]
        cdef DescriptorChain chain
        cdef bint used = False
        if not q.ready or q.mem is None:
            return
        if port.index != 0 and not port.guest_open:
            return  # Linux discards what reaches a port nobody has open: hold it until the guest opens the port
        while port.pending:
            chain = q.pop()
            if chain is None:
                break
            n = chain.write_writable(0, bytes(port.pending[:chain.writable_len]))
            del port.pending[:n]
            q.add_used(chain.head, n)
            used = True
        if used:
            self.signal_used(port.rx_queue)

    cdef void _control_from_guest(self) except *:
        cdef Virtqueue q = <Virtqueue>self.queues[CTRL_TX]
        cdef DescriptorChain chain
        while True:
            chain = q.pop()
            if chain is None:
                break
            msg = chain.read_readable(0, _CTRL.size)
            q.add_used(chain.head, 0)
            if len(msg) < _CTRL.size:
                continue
            port_id, event, value = _CTRL.unpack(msg)
            if event == DEVICE_READY and value == 1:
                for port in self.ports:
                    self._ctrl_pending.append(_CTRL.pack(port.index, DEVICE_ADD, 1))
            elif event == PORT_READY and value == 1 and port_id < len(self.ports):
                port = self.ports[port_id]
                if port.index == 0:
                    self._ctrl_pending.append(_CTRL.pack(0, CONSOLE_PORT, 1))
                else:
                    self._ctrl_pending.append(_CTRL.pack(port.index, PORT_NAME, 1) + port.name.encode())
                self._ctrl_pending.append(_CTRL.pack(port.index, PORT_OPEN, 1))
            elif event == PORT_OPEN and port_id < len(self.ports):
                self.ports[port_id].guest_open = bool(value)
                if value:
                    self._fill_rx(self.ports[port_id])
        self.signal_used(CTRL_TX)
        self._flush_control()

    cdef void _flush_control(self) except *:
        cdef Virtqueue q = <Virtqueue>self.queues[CTRL_RX]
        cdef DescriptorChain chain
        cdef bint used = False
        if not q.ready or q.mem is None:
            return
        while self._ctrl_pending:
            chain = q.pop()
            if chain is None:
                break
            msg = self._ctrl_pending.pop(0)
            q.add_used(chain.head, chain.write_writable(0, msg))
            used = True
        if used:
            self.signal_used(CTRL_RX)

    def feed(self, int port_index, bytes data) -> None:
        """Queue ``data`` for the guest on a port and deliver what fits into its receive buffers now."""
        with self._lock:
            port = self.ports[port_index]
            port.pending += data
            if self.activated and self.error is None:
                try:
                    self._fill_rx(port)
                except Exception as e:  # the transport sees the error on the next notify
                    self.error = f"receive on port {port_index}: {e}"

    def _pump_host(self, port, sock, ended) -> None:
        try:
            while not self._closed:
                try:
                    data = sock.recv(RX_CHUNK)
                except OSError:
                    return
                if not data:
                    return
                self.feed(port.index, data)
        finally:
            if ended is not None:
                ended.set()

    def identity(self) -> dict:
        """The base's, plus the port names (the guest names its port devices after them)."""
        ident = VirtioDevice.identity(self)
        ident["ports"] = [p.name for p in self.ports]
        return ident

    def state(self) -> dict:
        st = VirtioDevice.state(self)
        st["ports"] = [{"name": p.name, "guest_open": p.guest_open, "pending": bytes(p.pending)} for p in self.ports]
        st["control_pending"] = list(self._ctrl_pending)
        return st

    def set_state(self, dict st) -> None:
        with self._lock:
            if [p["name"] for p in st["ports"]] != [p.name for p in self.ports]:
                raise ValueError("saved console ports do not match the device")
            VirtioDevice.set_state(self, st)
            for port, pst in zip(self.ports, st["ports"]):
                port.guest_open = pst["guest_open"]
                port.pending = bytearray(pst["pending"])
            self._ctrl_pending = list(st["control_pending"])
