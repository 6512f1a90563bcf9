"""Where ``_vmcore``'s errors become ours: the one mechanism the library's boundary uses to turn an internal error
into a public one (httpx's ``map_exceptions``: a table of types, the public error raised ``from`` the internal one),
and the table for ``_vmcore``.

    with vmcore_errors():  # around a call that may reach _vmcore
        guest = backend.start(plan)

``_vmcore`` error (first match wins)                    public error
``_vmcore.errors.BootError``                            ``BootError`` (its console tail kept)
``KernelLoadError``, ``GuestImageError``, ``KvmError``  ``BootError`` (no guest can start)
``DiskError`` (``_vmcore.devices.block_image``)         ``InvalidConfigError`` (a disk image we cannot read)
``SnapshotError`` and every other ``VmmError``          ``SandboxError``

Our own errors always pass through unchanged; so does anything the table does not name.
"""

from __future__ import annotations

import contextlib
import functools

from pytest_microsandbox.errors import BootError, InvalidConfigError, MicrosandboxError, SandboxError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (``msb`` starts cold every time)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    ErrorMap = Mapping[type[Exception], Callable[[Exception], MicrosandboxError]]

__all__ = ["map_exceptions", "vmcore_errors"]


@contextlib.contextmanager
def map_exceptions(mapping: ErrorMap | Callable[[], ErrorMap]) -> Iterator[None]:
    """Raise what ``mapping`` makes of an exception of one of its types (the first that matches), ``from`` it.
    ``mapping`` may be a function returning the table: it is called only once something is raised."""
    try:
        yield
    except MicrosandboxError:
        raise
    except Exception as exc:
        table = mapping() if callable(mapping) else mapping
        for internal, public in table.items():
            if isinstance(exc, internal):
                raise public(exc) from exc
        raise


def vmcore_errors() -> contextlib.AbstractContextManager[None]:
    """``map_exceptions`` with the table for ``_vmcore``'s errors (the module docstring has it); ``_vmcore`` is
    imported only when something is raised."""
    return map_exceptions(_vmcore_table)


def _cannot_boot(exc: Exception) -> BootError:
    tail = getattr(exc, "console_tail", "")
    message = str(exc.args[0]) if tail and exc.args else str(exc)  # the internal str() appends the tail too
    return BootError(message, tail)


@functools.cache
def _vmcore_table() -> ErrorMap:
    from _vmcore.errors import BootError as VmmBootError
    from _vmcore.errors import GuestImageError, KernelLoadError, KvmError, VmmError

    table: dict[type[Exception], Callable[[Exception], MicrosandboxError]] = {
        VmmBootError: _cannot_boot,
        KernelLoadError: _cannot_boot,
        GuestImageError: _cannot_boot,
        KvmError: _cannot_boot,
    }
    try:
        from _vmcore.devices.block_image import DiskError  # compiled: a checkout without its build has none
    except ImportError:
        pass
    else:
        table[DiskError] = lambda exc: InvalidConfigError(str(exc))
    table[VmmError] = lambda exc: SandboxError(str(exc))  # last: the more precise ones above match first
    return table
