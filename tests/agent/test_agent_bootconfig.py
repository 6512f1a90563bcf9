"""Boot config encoding, and what a native (non PID 1) agent accepts of it."""

from __future__ import annotations

import pytest

from pytest_microsandbox.agent import AgentClient, BootConfig, GuestMount
from pytest_microsandbox.agent._wire import Fields, Tag, encode_fields, iter_fields
from pytest_microsandbox.errors import AgentError, InvalidConfigError


def test_encode_full_plan() -> None:
    cfg = BootConfig(
        root=GuestMount("block_serial", source="rootfs", fstype="ext4"),
        mounts=[
            GuestMount("virtiofs", "/data", "vol0", readonly=True, noexec=True),
            GuestMount("tmpfs", "/scratch", size_mib=64, mode=0o1777, nosuid=True, nodev=True),
        ],
        hostname="sb-1",
        env={"A": "1"},
        workdir="/work",
        restricted=True,
    )
    f = Fields(cfg.encode())
    assert Tag.ENTROPY not in {t for t, _ in iter_fields(cfg.encode())}  # only when asked (a VM's BOOT)
    assert f.str(Tag.HOSTNAME) == "sb-1" and f.int(Tag.RESTRICTED) == 1 and f.str(Tag.CWD) == "/work"
    root = Fields(f.raw(Tag.ROOT))
    assert (root.int(Tag.SOURCE_KIND), root.str(Tag.SOURCE), root.raw(Tag.TARGET)) == (3, "rootfs", None)
    data, scratch = (Fields(m) for m in f.all(Tag.MOUNT))
    assert (data.str(Tag.TARGET), data.int(Tag.FLAGS)) == ("/data", 1 | 2)
    assert (scratch.int(Tag.SIZE_MIB), scratch.int(Tag.MODE), scratch.int(Tag.FLAGS)) == (64, 0o1777, 4 | 8)
    assert f.all(Tag.ENV) == [b"A=1"]


@pytest.mark.parametrize(
    "cfg",
    [
        BootConfig(mounts=[GuestMount("nfs", "/x", "s")]),
        BootConfig(mounts=[GuestMount("virtiofs", "relative", "tag")]),
        BootConfig(mounts=[GuestMount("virtiofs", "/", "tag")]),
        BootConfig(mounts=[GuestMount("virtiofs", "/x")]),
        BootConfig(mounts=[GuestMount("virtiofs", "/x", "t", size_mib=5)]),
        BootConfig(mounts=[GuestMount("tmpfs", "/x", size_mib=0)]),
        BootConfig(root=GuestMount("tmpfs")),
        BootConfig(hostname=""),
        BootConfig(env={"A=B": "c"}),
        BootConfig(workdir="relative"),
    ],
)
def test_invalid_plans(cfg: BootConfig) -> None:
    with pytest.raises(InvalidConfigError):
        cfg.encode()


def test_native_boot_applies_env_and_workdir(client: AgentClient, tmp_path) -> None:
    client.boot(BootConfig(env={"FROM_BOOT": "yes", "PATH": "/usr/bin:/bin"}, workdir=str(tmp_path)).encode())
    assert client.hello().booted
    r = client.shell("echo $FROM_BOOT; pwd")
    assert r.stdout == f"yes\n{tmp_path}\n"
    with pytest.raises(AgentError, match="already applied"):
        client.boot(BootConfig().encode())


def test_native_boot_refuses_mounts(client: AgentClient) -> None:
    with pytest.raises(PermissionError, match="PID 1"):
        client.boot(BootConfig(mounts=[GuestMount("tmpfs", "/scratch")]).encode())
    assert not client.hello().booted


def test_encode_clone_identity() -> None:
    f = dict(iter_fields(BootConfig(entropy=b"\x07" * 64, realtime_ns=1_700_000_000_000_000_000).encode()))
    assert f[Tag.ENTROPY] == b"\x07" * 64
    assert int.from_bytes(f[Tag.REALTIME_NS], "little") == 1_700_000_000_000_000_000


@pytest.mark.parametrize("identity", [{"entropy": b"\x01" * 64}, {"realtime_ns": 1}], ids=["entropy", "clock"])
def test_native_boot_refuses_clone_identity(client: AgentClient, identity) -> None:
    """Seeding the kernel's entropy and stepping the clock are PID 1's duties (a VM's agent)."""
    with pytest.raises(PermissionError, match="PID 1"):
        client.boot(BootConfig(**identity).encode())


@pytest.mark.parametrize("size", [0, 513])
def test_entropy_outside_1_to_512_bytes(client: AgentClient, size: int) -> None:
    with pytest.raises(InvalidConfigError, match="entropy"):
        BootConfig(entropy=bytes(size)).encode()
    with pytest.raises(OSError, match="malformed boot config field"):
        client.boot(encode_fields([(Tag.ENTROPY, bytes(size))]))


def test_native_restricted_sets_no_new_privs(client: AgentClient) -> None:
    client.boot(BootConfig(restricted=True).encode())
    r = client.exec("grep", "NoNewPrivs", "/proc/self/status")
    assert r.stdout.split() == ["NoNewPrivs:", "1"]


def test_failed_boot_file_is_reported_in_hello(tmp_path) -> None:
    import socket
    import subprocess

    from agent_harness import AGENT

    cfg = tmp_path / "boot.msb"
    cfg.write_bytes(BootConfig(mounts=[GuestMount("tmpfs", "/scratch")]).encode())  # mounts: PID 1 only
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [str(AGENT), "--fd", str(theirs.fileno()), "--boot-config", str(cfg)],
        pass_fds=[theirs.fileno()],
        stderr=subprocess.PIPE,
    )
    theirs.close()
    with AgentClient(ours) as client:
        info = client.wait_ready(10)
        assert not info.booted and "need the agent to run as PID 1" in info.boot_error
        client.shutdown()
    _, err = proc.communicate(timeout=10)
    assert b"boot config" in err
