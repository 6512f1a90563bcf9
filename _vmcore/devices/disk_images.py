"""Open a disk image of a named format. The format is never guessed from the file: a guest can write any header
into a raw disk, and a raw disk read as qcow2 would follow a backing file of the guest's choosing. Every error is
a ``DiskError``; a format, variant or feature we do not read is its subclass ``UnsupportedImageError``, raised
here at open, before any guest sees the disk."""

from __future__ import annotations

import os

from _vmcore.devices.block_image import BlockImage, RawImage, UnsupportedImageError

FORMATS = ("raw", "qcow2", "vmdk")


def open_image(path: str | os.PathLike[str], format: str, read_only: bool = False, **backing: object) -> BlockImage:
    """The image at ``path`` as a ``BlockImage``. ``backing``: what a qcow2 passes on to its backing file."""
    if format == "raw":
        return RawImage(path, read_only)
    if format == "qcow2":
        from _vmcore.devices.qcow2 import Qcow2Image

        return Qcow2Image(path, read_only, **backing)
    if format == "vmdk":
        from _vmcore.devices.vmdk import VmdkImage

        return VmdkImage(path, read_only)
    raise UnsupportedImageError(f"disk image {os.fspath(path)}: format {format!r} is not one of {', '.join(FORMATS)}")
