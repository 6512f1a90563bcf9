"""Open a disk image by format: named (``format=``), else detected from the file's first bytes (a qcow2 or vmdk
header), else raw. Every error is a ``DiskError``; a format, variant or feature we do not read is its subclass
``UnsupportedImageError``, raised here at open, before any guest sees the disk."""

from __future__ import annotations

import os

from _vmcore.devices.block_image import BlockImage, DiskError, RawImage, UnsupportedImageError

FORMATS = ("raw", "qcow2", "vmdk")


def detect_format(path: str | os.PathLike[str]) -> str:
    """``qcow2`` or ``vmdk`` by magic number, ``raw`` otherwise (a regular file is never executed or followed)."""
    try:
        with open(path, "rb", buffering=0) as f:
            magic = f.read(4)
    except OSError as e:
        raise DiskError(f"cannot open disk {os.fspath(path)}: {e.strerror}") from None
    if magic == b"QFI\xfb":
        return "qcow2"
    if magic == b"KDMV" or magic == b"# Di":  # a sparse extent, or a descriptor file ("# Disk DescriptorFile")
        return "vmdk"
    return "raw"


def open_image(path: str | os.PathLike[str], format: str | None = None, read_only: bool = False,
               depth: int = 0) -> BlockImage:
    """The image at ``path`` as a ``BlockImage``; ``format`` None: detected."""
    fmt = format or detect_format(path)
    if fmt == "raw":
        return RawImage(path, read_only)
    if fmt == "qcow2":
        from _vmcore.devices.qcow2 import Qcow2Image

        return Qcow2Image(path, read_only, depth)
    if fmt == "vmdk":
        from _vmcore.devices.vmdk import VmdkImage

        return VmdkImage(path, read_only)
    raise UnsupportedImageError(f"disk image {os.fspath(path)}: format {fmt!r} is not one of {', '.join(FORMATS)}")
