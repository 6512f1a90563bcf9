"""The library's guest kernel search: ``_vmcore``'s, with an error that tells our users how to give a kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_microsandbox._kernel import find_guest_kernel
from pytest_microsandbox.errors import BootError


def test_an_explicit_kernel_is_taken_as_it_is(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"x")
    assert find_guest_kernel(kernel).path == kernel


def test_no_kernel_is_a_boot_error_naming_the_option_and_the_extra(tmp_path: Path) -> None:
    with pytest.raises(BootError, match=r"typo\.so does not exist: install libkrunfw or pip install "
                                        r"'pytest-microsandbox\[kernel\]', or name one: VmOptions\(kernel=PATH\) in "
                                        r"Sandbox.create, --msb-kernel/MSB_KERNEL for pytest, MSB_KERNEL for msb"):
        find_guest_kernel(tmp_path / "typo.so")
