"""The sandbox's error boundary: a name a live sandbox holds is refused with SandboxAlreadyExistsError, and an
internal (``_vmcore``) error while starting reaches the caller as one of ours, with nothing left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from _vmcore.errors import KernelLoadError
from pytest_microsandbox.errors import BootError, SandboxAlreadyExistsError
from pytest_microsandbox.sandbox import _sandbox
from pytest_microsandbox.store import ProcessIdentity, SandboxRecord, Store
from pytest_microsandbox.sync import Sandbox


class FailingBackend:
    """A backend whose guest never starts: ``start`` raises what it was given."""

    name = "namespace"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.started = 0

    def start(self, plan: object) -> object:
        self.started += 1
        raise self.error


def test_a_name_a_live_sandbox_holds_is_refused_before_anything_starts(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    store = Store(home)
    store.add_sandbox(SandboxRecord(name="taken", backend="namespace", owner=ProcessIdentity.current(),
                                    status="running"))
    backend = FailingBackend(AssertionError("never started"))
    monkeypatch.setattr(_sandbox, "backend_for", lambda isolation: backend)
    with pytest.raises(SandboxAlreadyExistsError, match="^sandbox already exists: taken$") as info:
        Sandbox.create("taken", isolation="namespace", home=home)
    assert info.value.name == "taken" and backend.started == 0
    assert store.get_sandbox("taken").status == "running"  # the live one is untouched


def test_the_store_refuses_a_second_record_of_a_name(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    record = SandboxRecord(name="sb", backend="vm", owner=ProcessIdentity.current(), status="running")
    store.add_sandbox(record)
    with pytest.raises(SandboxAlreadyExistsError):
        store.add_sandbox(record)


def test_an_internal_error_while_starting_is_ours_and_leaves_nothing(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    internal = KernelLoadError("kernel /nope (from --msb-kernel) does not exist")
    monkeypatch.setattr(_sandbox, "backend_for", lambda isolation: FailingBackend(internal))
    with pytest.raises(BootError, match="kernel /nope") as info:
        Sandbox.create("sb", isolation="namespace", home=home)
    assert info.value.__cause__ is internal
    assert Store(home).list_sandboxes() == []
    assert not (home / "run" / "sb").exists()
