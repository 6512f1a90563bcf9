"""Emulated devices, one module each: legacy stubs (i8042, CMOS), the 8250 UART, and the virtio-mmio transport
with its virtio-console, virtio-blk and virtio-fs backends (the last serves the FUSE server of ``_vmcore.fs``)."""
