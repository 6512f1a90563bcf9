# cython: language_level=3
"""The interface every virtio device backend implements; the transport (``virtio_mmio.MmioTransport``) does the
rest (registers, feature negotiation, status, queue setup, interrupts, the error state).

A backend is a subclass of ``VirtioDevice`` (in Cython, or in plain Python: every hook is ``cpdef``):

    device_id        the virtio device type (3 console, 2 block, 26 fs, ...)
    avail_features   device feature bits it offers; VIRTIO_F_VERSION_1, INDIRECT_DESC and EVENT_IDX are added
                     for it by ``__init__`` (pass ``common=False`` to opt out of the last two)
    queues           ``Virtqueue`` objects, one per queue, created from ``queue_sizes`` (their maximum sizes)
    config_bytes()   the current device configuration space (little-endian bytes; read at any offset)
    write_config(offset, data)   a driver write into configuration space (default: ignored)
    activate()       called once the driver sets DRIVER_OK: ``mem`` and ``acked_features`` are set, queues that
                     the driver made ready are attached to guest memory
    process_queue(i) the per-queue handler, called on the driver's notify for queue ``i`` (from the vCPU thread,
                     with the GIL): pop chains with ``queues[i].pop()``, serve them, ``add_used()``, then
                     ``signal_used(i)``. Raising ``VirtqueueError``/``GuestMemoryError`` puts the device in its
                     error state (DEVICE_NEEDS_RESET) and stops it until the driver resets it.
    reset()          the driver wrote status 0: drop in-flight state (call the base method: it resets queues)
    signal_used(i)   raise a used-buffer interrupt if queue ``i``'s driver asked for one (EVENT_IDX aware)

What a machine asks of every device, so that it never needs to know which kind it holds:

    identity()       what a snapshot holding the device is valid for (plain values; a subclass adds what its
                     driver read once, at probe: a disk's capacity, a console's ports, a share's tag)
    state() / set_state(st)   the device's saved state (plain values) and its restore
    lock             held by the device's own threads while they write guest memory (None: it has none); a
                     snapshot holds it
    wants_ioeventfd()  whether queue notifies may reach it from the machine's eventfd thread instead of the vCPU
    close()          release what it holds on the host (images, sockets); called once, when the machine closes

Backends that serve queues from another thread (e.g. data arriving from the host) must take their own lock, as
the vCPU thread may call ``process_queue`` at the same time.
"""

from libc.stdint cimport uint32_t, uint64_t

from _vmcore.devices.virtqueue cimport Virtqueue

VIRTIO_F_VERSION_1 = 1 << 32
VIRTIO_RING_F_INDIRECT_DESC = 1 << 28
VIRTIO_RING_F_EVENT_IDX = 1 << 29
INTERRUPT_VRING = 1
INTERRUPT_CONFIG = 2


cdef class VirtioDevice:
    def __init__(self, uint32_t device_id, uint64_t features, queue_sizes, bint common=True):
        self.device_id = device_id
        self.avail_features = features | VIRTIO_F_VERSION_1
        if common:
            self.avail_features |= VIRTIO_RING_F_INDIRECT_DESC | VIRTIO_RING_F_EVENT_IDX
        self.acked_features = 0
        self.queues = [Virtqueue(n) for n in queue_sizes]
        self.mem = None
        self.interrupt = None
        self.error = None
        self.activated = False

    cpdef bytes config_bytes(self):
        return b""

    cpdef void write_config(self, uint64_t offset, bytes data) except *:
        pass

    cpdef void activate(self) except *:
        pass

    cpdef void process_queue(self, int index) except *:
        pass

    cpdef void reset(self) except *:
        for q in self.queues:
            (<Virtqueue>q).reset()
        self.acked_features = 0
        self.activated = False
        self.error = None

    cpdef void signal_used(self, int index) except *:
        if (<Virtqueue>self.queues[index]).needs_interrupt() and self.interrupt is not None:
            self.interrupt(INTERRUPT_VRING)

    def identity(self) -> dict:
        """What a snapshot holding this device is valid for: its kind, the features it offers and its queue sizes."""
        return {"class": type(self).__name__, "device_id": self.device_id, "features": self.avail_features,
                "queues": [(<Virtqueue>q).max_size for q in self.queues]}

    @property
    def lock(self):
        """The lock this device's own threads hold while they write guest memory; None: it has no such threads."""
        return None

    def wants_ioeventfd(self) -> bool:
        """Whether the machine should take this device's queue notifies on its eventfd thread (ioeventfd) rather
        than on the vCPU's exit: worth it when serving a queue waits on the host (disk I/O)."""
        return False

    def close(self) -> None:
        """Release what this device holds on the host; the machine calls it once, when it closes."""

    def state(self) -> dict:
        return {"device_id": self.device_id, "acked_features": self.acked_features, "activated": self.activated,
                "error": self.error, "queues": [q.state() for q in self.queues]}

    def set_state(self, dict st) -> None:
        """The negotiated features, activation flag and queues saved by ``state()`` (the transport re-attaches the
        ready queues to guest memory)."""
        if st["device_id"] != self.device_id or len(st["queues"]) != len(self.queues):
            raise ValueError(f"saved state is for device {st['device_id']} with {len(st['queues'])} queues")
        self.acked_features = st["acked_features"]
        self.activated = st["activated"]
        self.error = st["error"]
        for q, qst in zip(self.queues, st["queues"]):
            if qst["max_size"] != (<Virtqueue>q).max_size:
                raise ValueError("saved queue size does not match the device")
            (<Virtqueue>q).set_state(qst)
