"""Native agent fixtures: the agent compiled for this host serving over a socketpair (no PID 1 duties)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agent_harness import NativeAgent, RawPeer

from pytest_microsandbox.agent import AgentClient


@pytest.fixture
def native_agent() -> Iterator[NativeAgent]:
    agent = NativeAgent()
    yield agent
    err = agent.stop()
    # with MSB_TEST_AGENT pointing at a sanitizer build, its reports fail the test that caused them
    assert "Sanitizer" not in err and "runtime error:" not in err, err
    assert agent.proc.returncode is not None


@pytest.fixture
def client(native_agent: NativeAgent) -> Iterator[AgentClient]:
    c = AgentClient(native_agent.sock, owns_transport=False, request_timeout=30)
    yield c
    c.close()


@pytest.fixture
def raw(native_agent: NativeAgent) -> RawPeer:
    return RawPeer(native_agent.sock)
