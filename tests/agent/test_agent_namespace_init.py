"""The agent as PID 1 of new user, mount, pid, uts, ipc and net namespaces (``unshare``), talking over an inherited
socketpair fd: the PID 1 path without a VM (pivot_root from a real mount, bind mounts, restricted profile)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_harness import AGENT
from qemu_guest import busybox_rootfs

from pytest_microsandbox.agent import AgentClient, BootConfig, GuestMount
from pytest_microsandbox.errors import AgentError

UNSHARE = ["unshare", "--user", "--map-root-user", "--mount", "--pid", "--uts", "--ipc", "--net", "--fork"]


def _namespaces_usable() -> str | None:
    if shutil.which("unshare") is None or shutil.which("busybox") is None:
        return "needs unshare (util-linux) and busybox (busybox-static)"
    probe_dir = tempfile.mkdtemp(prefix="msb-ns-probe-", dir="/var/tmp")
    try:  # what PID 1 will do: a tmpfs and an overlay inside a user namespace (Linux >= 5.11)
        script = (
            f"mount -t tmpfs t {probe_dir} && cd {probe_dir} && mkdir l u w m && "
            "mount -t overlay o -o lowerdir=l,upperdir=u,workdir=w m"
        )
        probe = subprocess.run([*UNSHARE, "sh", "-c", script], capture_output=True)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    if probe.returncode != 0:
        return (
            f"user namespaces (or overlayfs in them) unavailable here: {probe.stderr.decode(errors='replace').strip()}"
        )
    return None


_REASON = _namespaces_usable()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=str(_REASON))


class NamespaceAgent:
    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        self.proc = subprocess.Popen(
            [*UNSHARE, str(AGENT), "--fd", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
            stderr=subprocess.PIPE,
        )
        theirs.close()
        self.client = AgentClient(ours, request_timeout=30)

    def stop(self) -> str:
        self.client.close()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode(errors="replace")


@pytest.fixture
def ns_agent() -> Iterator[NamespaceAgent]:
    agent = NamespaceAgent()
    yield agent
    agent.stop()


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """Bind sources outside /tmp: PID 1 mounts a fresh tmpfs on /tmp (and /run) before it reads the plan."""
    path = Path(tempfile.mkdtemp(prefix="msb-ns-", dir="/var/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_pid1_in_namespaces_builds_the_root(ns_agent: NamespaceAgent, host_dir: Path) -> None:
    tmp_path = host_dir
    rootdir = busybox_rootfs(tmp_path / "rootfs", "namespace-root")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "in.txt").write_text("from the host")
    c = ns_agent.client
    assert c.hello().pid == 1
    c.boot(
        BootConfig(
            root=GuestMount("bind", source=str(rootdir)),
            mounts=[
                GuestMount("bind", "/shared", str(shared), readonly=True),
                GuestMount("tmpfs", "/scratch", size_mib=4, noexec=True),
            ],
            hostname="ns-guest",
            env={"PATH": "/bin"},
            workdir="/scratch",
            restricted=True,
        ).encode()
    )
    assert c.hello().booted
    assert c.fs.read("/etc/marker") == b"namespace-root"  # pivot_root into the overlay happened
    assert not c.fs.exists(str(tmp_path))  # the host's tree is out of view
    c.fs.write("/etc/marker", b"upper")
    assert (rootdir / "etc" / "marker").read_text() == "namespace-root"  # the lower is untouched
    assert c.fs.read("/shared/in.txt") == b"from the host"
    refused = c.shell("echo x > /shared/new")
    assert refused.exit_code != 0 and not (shared / "new").exists()
    assert c.exec("hostname").stdout == "ns-guest\n"
    assert c.shell("pwd").stdout == "/scratch\n"
    assert c.exec("grep", "NoNewPrivs", "/proc/self/status").stdout.split() == ["NoNewPrivs:", "1"]
    mounts = [line.split() for line in c.fs.read("/proc/mounts").decode().splitlines()]
    scratch = next(m for m in mounts if m[1] == "/scratch")
    assert {"noexec", "nosuid", "nodev"} <= set(scratch[3].split(","))
    c.shutdown()
    assert ns_agent.proc.wait(10) is not None


def test_pid1_in_namespaces_sees_only_its_own_processes(ns_agent: NamespaceAgent) -> None:
    c = ns_agent.client
    assert c.hello().pid == 1
    assert Path(AGENT).name.encode() in c.fs.read("/proc/1/cmdline")  # PID 1 mounted a proc of its own pid ns
    pids = [e for e in c.fs.list("/proc") if Path(e.path).name.isdigit()]
    assert len(pids) <= 3  # the agent and the command listing, nothing of the host
    with pytest.raises(AgentError, match="malformed"):  # a truncated field: refused, and still serving
        c.boot(BootConfig(env={"A": "1"}).encode() + b"\x00")
    assert c.exec("true").exit_code == 0
