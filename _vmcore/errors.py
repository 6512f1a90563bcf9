"""Errors raised by ``_vmcore`` (the library maps them to ``pytest_microsandbox.errors``)."""

from __future__ import annotations


class VmcoreError(Exception):
    """Base of every ``_vmcore`` error."""


class GuestImageError(VmcoreError, ValueError):
    """A guest artifact (initramfs, agent binary, kernel wrapper) cannot be built from what was given."""
