"""Emulated devices, one module each: legacy stubs (i8042, CMOS), the 8250 UART, and the virtio-mmio transport
with its virtio-console and virtio-blk backends."""
