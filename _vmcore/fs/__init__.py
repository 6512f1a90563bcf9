"""Our FUSE server (the engine of virtio-fs shares) and its ``/dev/fuse`` transport.

``FuseServer`` is transport-agnostic: one request in, one reply out. ``FuseMount`` mounts it on a host directory.
"""

from _vmcore.fs.chain import ChainError, serve_chain
from _vmcore.fs.mount import FuseMount, FuseUnavailableError
from _vmcore.fs.server import FuseServer

__all__ = ["ChainError", "FuseMount", "FuseServer", "FuseUnavailableError", "serve_chain"]
