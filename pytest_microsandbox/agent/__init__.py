"""Host side of the guest agent protocol (``_vmcore/guest/PROTOCOL.md``): clients, results, the boot config.

Each name is imported on first use: the VMM process imports only the wire format (``_wire``), not the clients.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pytest_microsandbox.agent._exec import ExecHandle
    from pytest_microsandbox.agent._ops import AgentInfo, GuestFsEntry
    from pytest_microsandbox.agent._wire import MAX_PAYLOAD, PROTO_VERSION, Frame, FrameDecoder, WireError
    from pytest_microsandbox.agent.async_client import AsyncAgentClient, AsyncExecHandle, AsyncGuestFs
    from pytest_microsandbox.agent.bootconfig import BootConfig, GuestMount
    from pytest_microsandbox.agent.client import AgentClient, GuestFs
    from pytest_microsandbox.agent.result import ExecResult

_HOMES = {
    "ExecHandle": "_exec",
    "AgentInfo": "_ops",
    "GuestFsEntry": "_ops",
    "MAX_PAYLOAD": "_wire",
    "PROTO_VERSION": "_wire",
    "Frame": "_wire",
    "FrameDecoder": "_wire",
    "WireError": "_wire",
    "AsyncAgentClient": "async_client",
    "AsyncExecHandle": "async_client",
    "AsyncGuestFs": "async_client",
    "BootConfig": "bootconfig",
    "GuestMount": "bootconfig",
    "AgentClient": "client",
    "GuestFs": "client",
    "ExecResult": "result",
}

__all__ = [
    "MAX_PAYLOAD",
    "PROTO_VERSION",
    "AgentClient",
    "AgentInfo",
    "AsyncAgentClient",
    "AsyncExecHandle",
    "AsyncGuestFs",
    "BootConfig",
    "ExecHandle",
    "ExecResult",
    "Frame",
    "FrameDecoder",
    "GuestFs",
    "GuestFsEntry",
    "GuestMount",
    "WireError",
]


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value  # found directly from now on
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
