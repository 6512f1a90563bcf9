# cython: language_level=3
"""The state the FUSE server's request handlers share (declared in ``state.pxd``); ``server.FuseServer`` fills it."""


cdef class ServerState:
    """Fields only: ``FuseServer`` sets them up and the handler modules read and change them."""
