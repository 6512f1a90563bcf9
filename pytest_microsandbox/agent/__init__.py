"""Host side of the guest agent protocol (``_vmcore/guest/PROTOCOL.md``): clients, results, the boot config.

Each name is imported on first use: the VMM process imports only the wire format (``_wire``), not the clients.
"""

from __future__ import annotations

from pytest_microsandbox._lazy import lazy_names

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


__getattr__, __dir__ = lazy_names(__name__, {name: f"{__name__}.{module}" for name, module in _HOMES.items()})
