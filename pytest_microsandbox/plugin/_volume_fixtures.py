"""The plugin's fixtures: named volumes (per test and shared across xdist workers) and mount configurations."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock
import pytest

from pytest_microsandbox.errors import InvalidConfigError, VolumeInUseError, VolumeNotFoundError
from pytest_microsandbox.mounts import MountConfig, VolumeKind
from pytest_microsandbox.plugin._options import Settings
from pytest_microsandbox.plugin._run import RunContext
from pytest_microsandbox.plugin._session import MicrosandboxSession
from pytest_microsandbox.plugin._started import of_test
from pytest_microsandbox.store import ProcessIdentity, Store
from pytest_microsandbox.sync import Volume, VolumeHandle

NamedVolumeFactory = Callable[..., VolumeHandle]


@pytest.fixture(scope="session")
def msb_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved ``--msb-*`` settings of this run."""
    return MicrosandboxSession.of(pytestconfig).settings


@pytest.fixture(scope="session")
def msb_run(pytestconfig: pytest.Config) -> RunContext:
    """This run's id, worker name and state directory."""
    return MicrosandboxSession.of(pytestconfig).run


@pytest.fixture
def msb_sandbox_settings(request: pytest.FixtureRequest, msb_settings: Settings) -> Settings:
    """This test's sandbox settings: the run's, with its ``@pytest.mark.sandbox(...)`` applied on top."""
    return msb_settings.with_marker(request.node.get_closest_marker("sandbox"))


@pytest.fixture
def named_volume_factory(request: pytest.FixtureRequest, msb_run: RunContext,
                         msb_sandbox_settings: Settings) -> Iterator[NamedVolumeFactory]:
    """Create fresh named volumes (``msb-<run>-<worker>-<n>``) for this test; all are removed at its teardown."""
    created: list[VolumeHandle] = []

    def make(*, kind: VolumeKind | str = VolumeKind.DIRECTORY, size_mib: int | None = None,
             quota_mib: int | None = None, labels: dict[str, str] | None = None) -> VolumeHandle:
        all_labels = {**(labels or {}), **msb_run.labels("named_volume")}
        volume = Volume.create(msb_run.next_name(), kind=kind, size_mib=size_mib, quota_mib=quota_mib,
                               labels=all_labels, home=msb_run.home)
        created.append(volume.handle)
        request.config.hook.pytest_microsandbox_volume_created(volume=volume.handle, request=request)
        return volume.handle

    yield make
    # A sandbox of this test that mounts one of these volumes depends on it: stop it first, as pytest would have
    # had the sandbox requested the volume fixture. Sandboxes started any other way keep the rule strict.
    test, session = of_test(request.node), MicrosandboxSession.of(request.config)
    if session.keeps(request.node, msb_sandbox_settings):
        for handle in [h for h in created if test.users_of(h.name)]:
            session.remember_kept(handle.name)  # kept with the sandbox that mounts it
            created.remove(handle)
    in_use: list[VolumeInUseError] = []
    with contextlib.ExitStack() as teardown:  # every volume is handled, even when one step fails
        for handle in reversed(created):
            teardown.callback(_remove_volume, handle, in_use)
        for handle in created:
            for sandbox in test.users_of(handle.name):
                teardown.callback(sandbox.stop)  # registered last: runs first, before the removals
    if in_use:
        raise in_use[0]


def _remove_volume(handle: VolumeHandle, in_use: list[VolumeInUseError]) -> None:
    try:
        handle.remove()
    except VolumeNotFoundError:
        pass  # the test removed it itself
    except VolumeInUseError as err:
        in_use.append(err)  # the rule is enforced: a mounted volume is not removed behind a sandbox's back


@pytest.fixture
def named_volume(named_volume_factory: NamedVolumeFactory) -> VolumeHandle:
    """A fresh, empty directory volume for this test, removed at its teardown."""
    return named_volume_factory()


@pytest.fixture(scope="session")
def shared_volume(pytestconfig: pytest.Config, msb_run: RunContext,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[VolumeHandle]:
    """One volume for the whole run, shared by all xdist workers: created and populated once (under a file lock
    in this run's temporary directory), removed once at the end of the run by the controlling process."""
    name = msb_run.shared_volume_name
    # The lock file is never deleted while the run lasts (that would break the lock); it lives in the run's own
    # base temp directory (an xdist worker's is a folder of it), which pytest's retention removes with the run.
    # Without xdist, the parent of the base temp is /tmp/pytest-of-USER itself: a file there outlives every run.
    run_temp = tmp_path_factory.getbasetemp()
    if not msb_run.is_controller:
        run_temp = run_temp.parent
    with filelock.FileLock(run_temp / f"msb-{msb_run.run_id}-shared.lock"):
        try:
            handle = Volume.get(name, home=msb_run.home)
        except VolumeNotFoundError:
            labels = msb_run.labels("shared_volume", owner=msb_run.controller)
            handle = Volume.create(name, labels=labels, home=msb_run.home).handle
            try:
                pytestconfig.hook.pytest_microsandbox_populate_shared_volume(volume=handle, config=pytestconfig)
            except BaseException:
                handle.remove()
                raise
    yield handle
    # Other workers' sandboxes may still use it; one this process started and left running is this worker's error.
    store, me = Store(msb_run.home), ProcessIdentity.current()
    mounted_here = [m for m in store.mounts_of(name) if m.owner.is_alive() and _created_by(store, m.sandbox, me)]
    if mounted_here:
        raise VolumeInUseError(name, mounted_here[0].sandbox)


def _created_by(store: Store, sandbox: str, process: ProcessIdentity) -> bool:
    record = store.get_sandbox(sandbox)
    return record is not None and record.config.get("creator") == [process.pid, process.start_ticks, process.machine]


@pytest.fixture
def tmpfs_mount() -> Callable[..., MountConfig]:
    """Build tmpfs mounts: ``tmpfs_mount(size_mib=64, noexec=True)``."""
    return Volume.tmpfs


@pytest.fixture
def bind_mount() -> Callable[..., MountConfig]:
    """Build bind mounts of existing host paths: ``bind_mount(tmp_path, readonly=True)``."""

    def make(path: str | os.PathLike[str], **options: bool) -> MountConfig:
        if not Path(path).exists():
            raise InvalidConfigError(f"bind mount source does not exist: {path}")
        return Volume.bind(path, **options)

    return make
