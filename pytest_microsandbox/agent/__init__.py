"""Host side of the guest agent protocol (``_vmcore/guest/PROTOCOL.md``): clients, results, the boot config."""

from pytest_microsandbox.agent._exec import ExecHandle
from pytest_microsandbox.agent._ops import AgentInfo, GuestFsEntry
from pytest_microsandbox.agent._wire import MAX_PAYLOAD, PROTO_VERSION, Frame, FrameDecoder, WireError
from pytest_microsandbox.agent.async_client import AsyncAgentClient, AsyncExecHandle, AsyncGuestFs
from pytest_microsandbox.agent.bootconfig import BootConfig, GuestMount
from pytest_microsandbox.agent.client import AgentClient, GuestFs
from pytest_microsandbox.agent.result import ExecResult

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
