"""The SQLite store: schema migrations, WAL, and process-liveness of records."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

from pytest_microsandbox._proc import process_start_ticks
from pytest_microsandbox.errors import SandboxNotFoundError, VolumeInUseError, VolumeNotFoundError
from pytest_microsandbox.store import SCHEMA_VERSION, HostIdentity, ProcessIdentity, SandboxRecord, Store, VolumeRecord
from pytest_microsandbox.store._schema import MIGRATIONS, SchemaTooNewError, migrate


def test_fresh_store_is_migrated_to_the_current_version_in_wal_mode(tmp_path: Path) -> None:
    store = Store(tmp_path)
    assert store.schema_version() == SCHEMA_VERSION >= 1
    assert store.path == tmp_path / "db" / "msb.db"
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"volumes", "sandboxes", "mounts"} <= tables


def test_migration_is_idempotent(tmp_path: Path) -> None:
    Store(tmp_path).schema_version()
    conn = sqlite3.connect(tmp_path / "db" / "msb.db", isolation_level=None)
    migrate(conn)
    migrate(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "msb.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNewError, match="upgrade pytest-microsandbox"):
        migrate(conn)


def test_process_identity_detects_death_and_pid_reuse() -> None:
    me = ProcessIdentity.current()
    assert me.is_alive()
    assert not ProcessIdentity(me.pid, me.start_ticks + 1).is_alive()  # same pid, another process
    child = subprocess.Popen(["sleep", "30"])
    ident = ProcessIdentity.of(child.pid)
    assert ident.is_alive()
    child.kill()
    assert not ident.is_alive() or child.poll() is None  # a zombie counts as dead
    child.wait()
    assert not ident.is_alive()
    assert process_start_ticks(ident.pid) is None or ProcessIdentity.of(ident.pid) != ident


def test_sandbox_and_mount_records(tmp_path: Path) -> None:
    store = Store(tmp_path)
    me = ProcessIdentity.current()
    store.begin_volume_create(VolumeRecord("v", "dir", None, None, {}, 1), me)
    store.finish_volume_create("v")
    store.add_sandbox(SandboxRecord(name="sb", backend="vm", owner=me, status="running", config={"cpus": 1}))
    store.attach_volume("sb", "v", "/data", readonly=True, owner=me)
    [mount] = store.mounts_of("v")
    assert (mount.sandbox, mount.guest_path, mount.readonly, mount.owner) == ("sb", "/data", True, me)
    store.update_sandbox("sb", status="stopped")
    assert store.get_sandbox("sb").status == "stopped"  # type: ignore[union-attr]
    assert [s.name for s in store.list_sandboxes()] == ["sb"]
    store.remove_sandbox("sb")
    assert store.mounts_of("v") == []  # cascaded
    with pytest.raises(SandboxNotFoundError):
        store.update_sandbox("sb", status="running")
    with pytest.raises(VolumeNotFoundError):
        store.attach_volume("sb", "missing", "/x", readonly=False, owner=me)


def test_reap_dead_mounts(tmp_path: Path) -> None:
    store = Store(tmp_path)
    me = ProcessIdentity.current()
    store.begin_volume_create(VolumeRecord("v", "dir", None, None, {}, 1), me)
    store.finish_volume_create("v")
    store.add_sandbox(SandboxRecord(name="sb", backend="vm", owner=me, status="running"))
    store.attach_volume("sb", "v", "/a", readonly=False, owner=me)
    store.attach_volume("sb", "v", "/b", readonly=False, owner=ProcessIdentity(me.pid, me.start_ticks - 1))
    assert store.reap_dead_mounts() == 1
    assert [m.guest_path for m in store.mounts_of("v")] == ["/a"]


def test_events_log_creations_and_removals(tmp_path: Path) -> None:
    from pytest_microsandbox.sync import Volume

    Volume.create("a", home=tmp_path)
    Volume.create("b", home=tmp_path)
    Volume.remove("a", home=tmp_path)
    events = Store(tmp_path).events()
    assert [(e.kind, e.subject) for e in events] == [
        ("volume.created", "a"), ("volume.created", "b"), ("volume.removed", "a")]
    assert [e.kind for e in Store(tmp_path).events("a")] == ["volume.created", "volume.removed"]


def _open_fresh(home: str, barrier, results) -> None:  # noqa: ANN001 (multiprocessing primitives)
    barrier.wait()
    try:
        Store(Path(home)).list_volumes()
        results.put("ok")
    except Exception as err:  # report every failure kind, not only the expected one
        results.put(repr(err))


def test_many_processes_opening_a_new_store_at_once(tmp_path: Path) -> None:
    """The first open switches the file to WAL and migrates it; racing first opens must all succeed."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    for round_ in range(20):
        barrier, results = ctx.Barrier(10), ctx.Queue()
        procs = [ctx.Process(target=_open_fresh, args=(str(tmp_path / f"home-{round_}"), barrier, results))
                 for _ in range(10)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [results.get(timeout=5) for _ in procs] == ["ok"] * 10


def test_records_of_another_machine_sharing_the_home_are_never_judged_by_our_pids(tmp_path: Path) -> None:
    """A home shared with another host or a container (an NFS home, a mounted ~/.microsandbox): a pid recorded
    there is not one of ours, so neither its transitions nor its mounts are reaped; an earlier boot's are."""
    store = Store(tmp_path)
    here, me = HostIdentity.current(), ProcessIdentity.current()
    dead = subprocess.Popen(["true"])
    dead.wait()
    other_host = ProcessIdentity(dead.pid, 1, str(HostIdentity("another-host", "0" * 32, here.pid_namespace)))
    container = ProcessIdentity(dead.pid, 1, str(HostIdentity(here.hostname, here.boot_id, "4026531999")))
    before_reboot = ProcessIdentity(dead.pid, 1, str(HostIdentity(here.hostname, "f" * 32, here.pid_namespace)))
    assert (other_host.is_alive(), container.is_alive(), before_reboot.is_alive()) == (True, True, False)
    store.begin_volume_create(VolumeRecord("theirs", "dir", None, None, {}, 1), other_host)
    store.begin_volume_create(VolumeRecord("stale", "dir", None, None, {}, 1), before_reboot)
    assert [r.name for r in store.abandoned_volume_transitions()] == ["stale"]
    assert store.claim_abandoned(store.abandoned_volume_transitions()[0], me)  # the owner, machine included, matched
    store.begin_volume_create(VolumeRecord("v", "dir", None, None, {}, 1), me)
    store.finish_volume_create("v")
    store.add_sandbox(SandboxRecord(name="sb", backend="namespace", owner=container, status="running"))
    store.attach_volume("sb", "v", "/a", readonly=False, owner=container)
    assert store.reap_dead_mounts() == 0
    with pytest.raises(VolumeInUseError):
        store.begin_volume_remove("v", me)
    assert store.get_sandbox("sb").owner == container  # type: ignore[union-attr]


def test_rows_written_before_the_machine_column_are_judged_here(tmp_path: Path) -> None:
    path = tmp_path / "db" / "msb.db"
    path.parent.mkdir()
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in ";".join(MIGRATIONS[:2]).split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    dead = subprocess.Popen(["true"])
    dead.wait()
    conn.execute("INSERT INTO volumes (name, kind, labels, created_at, state, owner_pid, owner_start) "
                 "VALUES ('old', 'dir', '{}', 1, 'creating', ?, 1)", (dead.pid,))
    conn.close()
    store = Store(tmp_path)
    assert store.schema_version() == SCHEMA_VERSION
    [old] = store.abandoned_volume_transitions()
    assert old.owner == ProcessIdentity(dead.pid, 1)
    assert store.claim_abandoned(old, ProcessIdentity.current())
