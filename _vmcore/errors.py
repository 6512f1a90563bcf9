"""Exceptions raised by the VMM core; a library built on it maps them onto errors of its own.

    VmmError
    ├── KvmError            an ioctl on /dev/kvm, the VM or a vCPU failed
    ├── GuestMemoryError    a guest physical range lies outside guest RAM
    ├── VirtqueueError      a malformed descriptor chain or ring (the device goes to its error state)
    ├── KernelLoadError     the kernel image is missing, unknown or does not fit
    ├── GuestImageError     a guest artifact (initramfs, agent binary, kernel wrapper) cannot be built
    ├── BootError           the guest died or never got where it should; carries the console tail
    └── SnapshotError       a snapshot is missing, corrupted or made for another kernel, memory size, vCPU count
                            or device layout (never restored: rebuild it)
"""

from __future__ import annotations


class VmmError(Exception):
    """Base of every error the VMM core raises."""



class KvmError(VmmError):
    pass


class GuestMemoryError(VmmError):
    pass


class VirtqueueError(VmmError):
    pass


class KernelLoadError(VmmError):
    pass


class GuestImageError(VmmError, ValueError):
    """A guest artifact (initramfs, agent binary, kernel wrapper) cannot be built from what was given."""


class BootError(VmmError):
    """The guest stopped (or never arrived) where expected; ``console_tail`` holds its last console output."""

    def __init__(self, message: str, console_tail: str = "", exit_reason: str = "") -> None:
        super().__init__(message)
        self.console_tail = console_tail
        self.exit_reason = exit_reason

    def __str__(self) -> str:
        text = super().__str__()
        if self.console_tail:
            text += "\n--- console tail ---\n" + self.console_tail
        return text


class SnapshotError(VmmError):
    """A snapshot cannot be restored here: missing, corrupted, another format version, or made for another
    machine (kernel, initramfs, memory size, vCPU count, command line or device layout)."""
