"""The library's error boundary: ``_vmcore``'s errors become ours (``map_exceptions`` and its table), at the command
line as elsewhere."""

from __future__ import annotations

import errno
import os

import pytest

from _vmcore.devices.block_image import DiskError
from _vmcore.errors import BootError as VmmBootError
from _vmcore.errors import GuestImageError, KernelLoadError, KvmError, SnapshotError, VirtqueueError
from pytest_microsandbox._error_boundary import map_exceptions, vmcore_errors
from pytest_microsandbox.errors import (
    BootError,
    InvalidConfigError,
    MicrosandboxError,
    SandboxError,
    VolumeNotFoundError,
)


def test_map_exceptions_maps_the_first_match_from_the_original() -> None:
    table = {KeyError: lambda e: InvalidConfigError(f"bad key {e}"), LookupError: lambda e: SandboxError(str(e))}
    with pytest.raises(InvalidConfigError, match="bad key 'x'") as info, map_exceptions(table):
        raise KeyError("x")
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(SandboxError), map_exceptions(table):
        raise IndexError("i")
    with pytest.raises(ZeroDivisionError), map_exceptions(table):  # not in the table: through unchanged
        raise ZeroDivisionError
    error = VolumeNotFoundError("v")
    with pytest.raises(VolumeNotFoundError) as info, map_exceptions({Exception: lambda e: SandboxError(str(e))}):
        raise error  # ours pass through, even where the table would match
    assert info.value is error


def test_map_exceptions_calls_a_lazy_table_only_when_something_is_raised() -> None:
    calls = []

    def table() -> dict:
        calls.append(1)
        return {KeyError: lambda e: SandboxError(str(e))}

    with map_exceptions(table):
        pass
    assert calls == []
    with pytest.raises(SandboxError), map_exceptions(table):
        raise KeyError("k")
    assert calls == [1]


@pytest.mark.parametrize(
    "internal,public",
    [
        (KernelLoadError("no kernel at /nope"), BootError),
        (GuestImageError("initramfs too large"), BootError),
        (KvmError("KVM_CREATE_VM failed"), BootError),
        (DiskError("qcow2 feature not supported"), InvalidConfigError),
        (SnapshotError("no template abc"), SandboxError),
        (VirtqueueError("bad descriptor"), SandboxError),
    ],
)
def test_vmcore_errors_become_ours(internal: Exception, public: type[MicrosandboxError]) -> None:
    with pytest.raises(public) as info, vmcore_errors():
        raise internal
    assert type(info.value) is public and info.value.__cause__ is internal
    assert str(internal) in str(info.value)


def test_an_internal_boot_error_is_one_boot_error_with_its_console_tail() -> None:
    with pytest.raises(BootError) as info, vmcore_errors():
        raise VmmBootError("guest stopped: triple fault", console_tail="Kernel panic")
    assert info.value.console_tail == "Kernel panic"
    assert str(info.value).count("Kernel panic") == 1 and "triple fault" in str(info.value)


def test_the_command_line_reports_an_internal_error_as_ours(tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from _vmcore.template_cache import TemplateCache
    from pytest_microsandbox.cli import main

    def entries(self: TemplateCache) -> list:
        raise SnapshotError("timed out waiting for template abc")

    monkeypatch.setattr(TemplateCache, "entries", entries)
    assert main(["--home", str(tmp_path), "snapshot", "ls"]) == 1
    assert capsys.readouterr().err == "msb: error: timed out waiting for template abc\n"


@pytest.mark.parametrize("code,builtin", [(errno.EPIPE, BrokenPipeError), (errno.EAGAIN, BlockingIOError),
                                          (errno.ETIMEDOUT, TimeoutError), (errno.ENOENT, FileNotFoundError),
                                          (errno.EINTR, InterruptedError)])
def test_a_guest_errno_is_also_the_builtin_python_picks_for_it(code: int, builtin: type[OSError]) -> None:
    from pytest_microsandbox.errors import GuestOSError

    error = GuestOSError.for_errno(code, os.strerror(code), "read /x")
    assert isinstance(error, GuestOSError) and isinstance(error, builtin) and isinstance(error, SandboxError)
    assert (error.errno, error.filename) == (code, "read /x")
    assert type(GuestOSError.for_errno(code, "again", "write /y")) is type(error)  # made once


def test_an_errno_without_a_builtin_is_a_plain_guest_os_error() -> None:
    from pytest_microsandbox.errors import GuestOSError

    assert type(GuestOSError.for_errno(errno.EIO, "I/O error", "read /x")) is GuestOSError
