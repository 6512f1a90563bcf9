"""virtio-fs (device type 26): our FUSE server behind a hiprio queue and request queues, the tag in config space.

Needs the FUSE server (``_vmcore.fs``): importing this module without it raises ImportError.
Queue 0 is the high-priority queue (FORGET, BATCH_FORGET, INTERRUPT: no replies), queues 1..n carry requests.
Each chain is served by ``serve_chain`` (request copied privately, reply straight into guest memory when it fits).
"""

from __future__ import annotations

import errno
import struct

from _vmcore.devices.virtio_device import VirtioDevice
from _vmcore.devices.virtqueue import Virtqueue
from _vmcore.errors import VirtqueueError
from _vmcore.fs import ChainError, FuseServer, serve_chain

DEVICE_ID = 26
TAG_BYTES = 36
QUEUE_SIZE = 256
NO_REPLY_OPCODES = (2, 42)  # FORGET, BATCH_FORGET


class VirtioFs(VirtioDevice):
    """``tag`` is what the guest mounts (``mount -t virtiofs TAG /dir``, or ``rootfstype=virtiofs root=TAG``).

    ``server`` may be None: a pre-declared slot (e.g. in a snapshot) that ``bind`` gives a share later; until
    then every request is answered ENODEV, so a guest mount of the slot fails cleanly.
    """

    def __init__(
        self, server: FuseServer | None, tag: str, request_queues: int = 1, queue_size: int = QUEUE_SIZE
    ) -> None:
        raw = tag.encode()
        if not raw or len(raw) > TAG_BYTES or b"\0" in raw:
            raise ValueError(f"virtio-fs tag must be 1 to {TAG_BYTES} bytes without NUL: {tag!r}")
        if not 1 <= request_queues <= 64:
            raise ValueError("request_queues must be between 1 and 64")
        super().__init__(DEVICE_ID, 0, [queue_size] * (1 + request_queues))
        self.server = server
        self.tag = tag
        self.request_queues = request_queues
        self.counters = {"requests": 0, "bad_chains": 0}

    def config_bytes(self) -> bytes:
        return self.tag.encode().ljust(TAG_BYTES, b"\0") + struct.pack("<I", self.request_queues)

    def process_queue(self, index: int) -> None:
        queue: Virtqueue = self.queues[index]
        base, size = self.mem.address, self.mem.size
        while (chain := queue.pop()) is not None:
            if self.server is None:
                queue.add_used(chain.head, self._refuse(chain))
                continue
            try:
                used = serve_chain(self.server, base, size, chain.segments)
            except ChainError as err:
                self.counters["bad_chains"] += 1
                raise VirtqueueError(f"virtio-fs queue {index}: {err}") from None
            self.counters["requests"] += 1
            queue.add_used(chain.head, used)
        self.signal_used(index)

    def _refuse(self, chain) -> int:
        """Answer a request on an unbound slot with ENODEV (nothing for FORGETs, which get no reply)."""
        header = chain.read_readable(0, 16)
        if len(header) < 16 or chain.writable_len < 16:
            return 0
        _length, opcode, unique = struct.unpack("<IIQ", header)
        if opcode in NO_REPLY_OPCODES:
            return 0
        return chain.write_writable(0, struct.pack("<IiQ", 16, -errno.ENODEV, unique))

    def bind(self, server: FuseServer) -> None:
        """Give this slot its share (the guest mounts it afterwards)."""
        self.server = server

    def unbind(self) -> FuseServer | None:
        """Take the share away; the guest's next requests get ENODEV. Returns the server that was bound."""
        server, self.server = self.server, None
        if server is not None:
            server.reset()
        return server

    def reset(self) -> None:
        VirtioDevice.reset(self)
        if self.server is not None:
            self.server.reset()  # the driver will INIT again: nothing it looked up before is valid any more

    def identity(self) -> dict:
        """The base's, plus the tag (what the guest mounts; its queue count is in the base's queues)."""
        ident = VirtioDevice.identity(self)
        ident["tag"] = self.tag
        return ident

    def state(self) -> dict:
        st = VirtioDevice.state(self)
        st.update(tag=self.tag, request_queues=self.request_queues)
        return st
