"""The VMM zygote (``pytest_microsandbox.vmm.zygote``): VMMs come from it jailed and confined, are watched and killed
through their pidfds, and never outlive it; a bad request is an error, not a dead zygote. Runs on any /dev/kvm (the
machine a VMM boots here never needs guest user space)."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest

from _vmcore.host import KvmKind, detect_kvm
from pytest_microsandbox.errors import SandboxError
from pytest_microsandbox.sandbox import _zygote_client
from pytest_microsandbox.sandbox._zygote_client import ForkedProcess, Zygote, zygote
from pytest_microsandbox.vmm.spec import SPEC_VERSION, VmSpec, encode

pytestmark = pytest.mark.skipif(detect_kvm().kind is KvmKind.NONE, reason="needs /dev/kvm")


def _status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)


def _children(pid: int) -> set[int]:
    return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}


def _wait_for(predicate, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def started(tmp_path: Path):
    z = Zygote()
    made: list[tuple[ForkedProcess, socket.socket]] = []

    def spawn(name: str = "s") -> ForkedProcess:
        run = tmp_path / name
        run.mkdir()
        spec = VmSpec(memory_mib=64, cpus=1, kernel=None, console_log=str(run / "console.log"), boot_timeout=600)
        ours, theirs = socket.socketpair()
        with theirs, open(spec.console_log, "ab") as log:
            vmm = z.spawn(spec, theirs, log.fileno())
        made.append((vmm, ours))
        assert _wait_for(lambda: "ready to run the machine" in (run / "console.log").read_text())
        return vmm

    yield z, spawn
    for vmm, ours in made:
        vmm.kill()
        ours.close()
    z.close()


def test_a_vmm_comes_jailed_and_confined_and_dies_when_killed(started) -> None:
    z, spawn = started
    vmm = spawn()
    status = _status(vmm.pid)
    assert int(status["PPid"]) == z.process.pid  # the zygote's child, not ours
    assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
    assert os.readlink(f"/proc/{vmm.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    assert not vmm.ended(0)
    vmm.kill()
    assert vmm.ended(10)


def test_the_next_vmm_is_forked_ahead_and_every_vmm_dies_with_the_zygote(started) -> None:
    z, spawn = started
    first = spawn("a")
    assert _wait_for(lambda: len(_children(z.process.pid)) == 2)  # the VMM and the spare waiting for a request
    spare = (_children(z.process.pid) - {first.pid}).pop()
    second = spawn("b")
    assert second.pid == spare  # the request was handed to it: no fork on its path
    os.kill(z.process.pid, signal.SIGKILL)
    assert first.ended(10) and second.ended(10)
    assert _wait_for(lambda: not Path(f"/proc/{spare}").exists() or _status(spare)["State"].startswith("Z"))


@pytest.mark.parametrize("wire, error", [
    ({"version": SPEC_VERSION, "memory_mib": 64}, r"missing fields \['console_log', 'cpus', 'kernel'\]"),
    ({"version": SPEC_VERSION + 1}, f"version {SPEC_VERSION + 1}; this side reads version {SPEC_VERSION}"),
    (lambda spec: {**encode(spec), "disks": [{"path": "/d"}]}, r"spec.disks\[0\]: missing fields"),
], ids=["incomplete", "another-version", "malformed-disk"])
def test_a_bad_request_is_an_error_and_the_zygote_serves_on(started, tmp_path: Path, monkeypatch, wire,
                                                             error) -> None:
    z, spawn = started
    monkeypatch.setattr(_zygote_client, "encode", wire if callable(wire) else lambda spec: wire)
    with pytest.raises(SandboxError, match=f"could not start a VMM: SpecError: .*{error}"):
        with open(tmp_path / "log", "ab") as log:
            ours, theirs = socket.socketpair()
            with ours, theirs:
                z.spawn(VmSpec(64, 1, None, str(tmp_path / "log")), theirs, log.fileno())
    monkeypatch.undo()
    assert z.alive()
    assert not spawn().ended(0)


def test_an_owner_that_closes_its_end_ends_the_zygote_and_its_vmms(started) -> None:
    z, spawn = started
    vmm = spawn()
    z.sock.close()
    assert vmm.ended(10)
    assert z.process.wait(10) == 0


def test_a_forked_owner_gets_a_zygote_of_its_own() -> None:
    mine = zygote()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, str(zygote().process.pid).encode())
        finally:
            os._exit(0)
    os.close(write)
    theirs = int(os.read(read, 32))
    os.close(read)
    os.waitpid(pid, 0)
    assert theirs != mine.process.pid
