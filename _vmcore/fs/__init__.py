"""Our FUSE server (the engine of virtio-fs shares) and its ``/dev/fuse`` transport.

``FuseServer`` is transport-agnostic: one request in, one reply out. ``FuseConnection`` serves it on a ``/dev/fuse``
descriptor another process mounts; ``FuseMount`` mounts it on a host directory.
"""

from _vmcore.fs.chain import ChainError, serve_chain
from _vmcore.fs.mount import FuseConnection, FuseMount, FuseUnavailableError
from _vmcore.fs.server import FuseServer

__all__ = ["ChainError", "FuseConnection", "FuseMount", "FuseServer", "FuseUnavailableError", "serve_chain"]
