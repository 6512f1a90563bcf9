"""Where a machine puts its virtio-mmio devices: the window above guest RAM and the interrupt line of each.

Plain constants, so that code which only sizes a machine (how many devices it may ask for) loads nothing else of
the VMM.
"""

MMIO_BASE = 0xD000_0000  # the first device's 4 KiB register window; guest RAM ends below it
MAX_MEMORY_MIB = MMIO_BASE >> 20
# ISA lines of the PIC and I/O APIC that nothing else uses, raised through irqfd: one per device, in order
DEVICE_IRQS = (5, 6, 7, 9, 10, 11, 12, 14, 15)
MAX_DEVICES = len(DEVICE_IRQS)  # virtio-mmio devices of one machine, its console included
