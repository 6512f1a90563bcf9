"""The store's reused connections: one per thread and database, never crossing a fork, always reading fresh state."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pytest_microsandbox.errors import VolumeAlreadyExistsError
from pytest_microsandbox.store import ProcessIdentity, Store, VolumeRecord, _connection, _ready_record
from pytest_microsandbox.sync import Volume

REPO = Path(__file__).resolve().parents[2]


def connection_of(store: Store):  # noqa: ANN201 (sqlite3.Connection)
    """The connection this thread uses for ``store`` (opened if need be)."""
    conn = _connection.acquire(store.path)
    _connection.release(store.path, conn)
    return conn


def in_child(body, forked: list[float] | None = None) -> dict:  # noqa: ANN001 (runs in a forked child)
    """Fork, run ``body`` in the child, and return the JSON-able dict it returned (or {"error": ...}); ``forked``
    gets the time ``os.fork`` returned in the parent."""
    read, write = os.pipe()
    pid = os.fork()
    if pid and forked is not None:
        forked.append(time.monotonic())
    if pid == 0:  # the child: never return into pytest
        try:
            os.close(read)
            try:
                result = body()
            except BaseException as err:  # report every failure kind
                result = {"error": repr(err)}
            os.write(write, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return json.loads(data)


def test_operations_reuse_one_connection_and_check_the_schema_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Volume.create("first", home=home)
    store = Store(home)
    conn = connection_of(store)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        for i in range(20):
            Volume.create(f"v{i}", home=home)
            assert Volume.get(f"v{i}", home=home).name == f"v{i}"
            Volume.list(home=home)
            Volume.remove(f"v{i}", home=home)
        assert connection_of(Store(home)) is conn  # a new Store for the same home: still the same connection
    finally:
        conn.set_trace_callback(None)
    assert statements, "the operations ran on another connection"
    assert not [s for s in statements if s.lstrip().upper().startswith("PRAGMA")]  # no schema checks, no pragmas


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Volume.create("from-parent", home=home)
    parent_conn = connection_of(Store(home))

    def child() -> dict:
        conn = connection_of(Store(home))
        Volume.create("from-child", home=home)  # a write through the child's own connection
        return {"own": conn is not parent_conn,
                "parent_set_aside": any(c is parent_conn for c in _connection._inherited),
                "sees_parent": [h.name for h in Volume.list(home=home)]}

    result = in_child(child)
    assert result == {"own": True, "parent_set_aside": True, "sees_parent": ["from-child", "from-parent"]}
    # the parent's connection is untouched and sees the child's write
    assert connection_of(Store(home)) is parent_conn and parent_conn.in_transaction is False
    assert [h.name for h in Volume.list(home=home)] == ["from-child", "from-parent"]


def test_a_fork_that_skipped_the_at_fork_hooks_is_caught_by_the_pid(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    Volume.create("v", home=home)
    old = connection_of(Store(home))
    monkeypatch.setattr(_connection._state, "pid", -1)  # as a child forked behind the interpreter's back sees it
    new = connection_of(Store(home))
    assert new is not old and any(c is old for c in _connection._inherited)
    assert [h.name for h in Volume.list(home=home)] == ["v"]


def test_a_fork_waits_for_another_threads_transaction_and_the_child_inherits_none(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = Store(home)
    Volume.create("v", home=home)
    inside, done = threading.Event(), threading.Event()

    def writer() -> None:
        with store._write() as conn:  # holds SQLite's write lock until ``done``
            conn.execute("UPDATE volumes SET labels='{\"held\": \"yes\"}' WHERE name='v'")
            inside.set()
            done.wait(10)

    thread = threading.Thread(target=writer)
    thread.start()
    assert inside.wait(10)
    threading.Timer(0.5, done.set).start()
    started, forked = time.monotonic(), []

    def child() -> dict:
        # the writer's transaction was committed before the fork: the child writes at once, on its own connection
        begun = time.monotonic()
        Volume.create("w", home=home)
        return {"labels": Volume.get("v", home=home).labels, "write_s": time.monotonic() - begun}

    result = in_child(child, forked)
    thread.join(10)
    assert forked[0] - started >= 0.4, "the fork did not wait for the other thread's transaction"
    assert result["labels"] == {"held": "yes"} and result["write_s"] < 0.4  # no lock left to wait for
    assert [h.name for h in Volume.list(home=home)] == ["v", "w"]


def test_threads_use_their_own_connections_at_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Volume.create("seed", home=home)
    barrier = threading.Barrier(6)
    connections: dict[int, object] = {}
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            barrier.wait(10)
            connections[n] = connection_of(Store(home))
            for i in range(25):
                name = f"t{n}-{i}"
                Volume.create(name, home=home)
                assert Volume.get(name, home=home).name == name
                assert name in {h.name for h in Volume.list(home=home)}
                Volume.remove(name, home=home)
            assert connection_of(Store(home)) is connections[n]
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len({id(c) for c in connections.values()}) == 6  # one connection per thread
    assert [h.name for h in Volume.list(home=home)] == ["seed"]
    assert Store(home).transitional_volume_names() == set()


# Another process: creates or removes a volume per line it reads, and answers each line once done.
WRITER = textwrap.dedent(
    """
    import sys
    from pytest_microsandbox.sync import Volume

    for line in sys.stdin:
        verb, name = line.split()
        (Volume.create if verb == "create" else Volume.remove)(name, home=sys.argv[1])
        print("done", flush=True)
    """
)


def test_a_reused_connection_sees_every_write_of_another_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Volume.create("mine", home=home)
    conn = connection_of(Store(home))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(home)], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        expected = {"mine"}
        for i in range(30):
            verb, name = ("remove", f"o{i - 1}") if i % 3 == 2 else ("create", f"o{i}")
            writer.stdin.write(f"{verb} {name}\n")  # type: ignore[union-attr]
            writer.stdin.flush()  # type: ignore[union-attr]
            assert writer.stdout.readline() == "done\n"  # type: ignore[union-attr]
            (expected.add if verb == "create" else expected.discard)(name)
            assert {h.name for h in Volume.list(home=home)} == expected
            for gone_or_there in (name,):
                found = Store(home).get_volume(gone_or_there)
                assert (found is not None) == (verb == "create")
        assert connection_of(Store(home)) is conn  # every read above went through the one cached connection
    finally:
        writer.stdin.close()  # type: ignore[union-attr]
        writer.wait(30)


def test_a_home_removed_and_made_again_is_opened_afresh(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Volume.create("old", home=home)
    old = connection_of(Store(home))
    shutil.rmtree(home)
    assert Volume.list(home=home) == []  # not the removed database's rows
    Volume.create("new", home=home)
    assert [h.name for h in Volume.list(home=home)] == ["new"]
    assert connection_of(Store(home)) is not old


def test_a_failed_transaction_leaves_the_connection_clean(tmp_path: Path) -> None:
    home = tmp_path / "home"
    Volume.create("v", home=home)
    store = Store(home)
    conn = connection_of(store)
    with pytest.raises(VolumeAlreadyExistsError):
        store.begin_volume_create(VolumeRecord("v", "dir", None, None, {}, 1), ProcessIdentity.current())
    assert not conn.in_transaction and connection_of(store) is conn
    # a transaction left open by mistake is rolled back when the operation ends, never carried into the next
    leaked = _connection.acquire(store.path)
    leaked.execute("BEGIN IMMEDIATE")
    leaked.execute("DELETE FROM volumes")
    _connection.release(store.path, leaked)
    assert not conn.in_transaction
    assert [h.name for h in Volume.list(home=home)] == ["v"]


def test_nested_operations_share_the_connection(tmp_path: Path) -> None:
    store = Store(tmp_path / "home")
    with store._write() as outer:
        inner = _connection.acquire(store.path)
        try:
            assert inner is outer and inner.in_transaction
        finally:
            _connection.release(store.path, inner)
        assert outer.in_transaction  # the inner release did not end the outer transaction


def test_a_thread_keeps_a_bounded_number_of_connections(tmp_path: Path) -> None:
    def worker() -> None:
        for i in range(_connection._PER_THREAD + 5):
            Volume.list(home=tmp_path / f"home-{i}")
        counts.append(len(_connection._state.open))

    counts: list[int] = []
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(60)
    assert counts == [_connection._PER_THREAD]


def test_a_ready_record_built_from_a_row_equals_the_dataclass() -> None:
    built = _ready_record("v", "dir", 5, None, '{"a": "b"}', 123)
    assert built == VolumeRecord("v", "dir", 5, None, {"a": "b"}, 123)
    assert repr(built) == repr(VolumeRecord("v", "dir", 5, None, {"a": "b"}, 123))
    with pytest.raises(AttributeError):
        built.name = "x"  # type: ignore[misc]  # still frozen
