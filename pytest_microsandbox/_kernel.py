"""The guest kernel of vm sandboxes: ``_vmcore``'s search, with the error telling our users how to give one."""

from __future__ import annotations

import os

from _vmcore.errors import KernelLoadError
from _vmcore.kernels import KernelLocation, find_kernel
from pytest_microsandbox.errors import BootError

KERNEL_HINT = ("install libkrunfw or pip install 'pytest-microsandbox[kernel]', or name one: "
               "VmOptions(kernel=PATH) in Sandbox.create, --msb-kernel/MSB_KERNEL for pytest, MSB_KERNEL for msb")


def find_guest_kernel(explicit: str | os.PathLike | None = None) -> KernelLocation:
    """``explicit`` (a kernel image or a libkrunfw .so; it must exist), else the system's libkrunfw, else the copy
    the ``[kernel]`` extra installs. Raises BootError, naming the ways to give one, when there is none."""
    try:
        return find_kernel(explicit)
    except KernelLoadError as e:
        raise BootError(f"{e}: {KERNEL_HINT}") from None
