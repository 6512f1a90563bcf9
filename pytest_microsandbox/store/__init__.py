"""The metadata store: SQLite (WAL) at ``<home>/db/msb.db``, holding volumes, sandboxes and their mounts.

Each thread reuses one connection per database (``_connection``: safe across threads, processes and ``fork``), so
the store is safe to use from threads (the async API) and from many processes (xdist workers): SQLite's write lock
(``BEGIN IMMEDIATE``) serialises the read-check-write sequences.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from pytest_microsandbox.errors import (
    SandboxAlreadyExistsError,
    SandboxNotFoundError,
    VolumeAlreadyExistsError,
    VolumeInUseError,
    VolumeNotFoundError,
)
from pytest_microsandbox.store import _connection
from pytest_microsandbox.store._liveness import HostIdentity, ProcessIdentity
from pytest_microsandbox.store._schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION", "Event", "HostIdentity", "MountRecord", "ProcessIdentity", "SandboxRecord", "Store",
    "VolumeRecord",
]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class VolumeRecord:
    """A named volume's row: name, kind (``dir``/``disk``), quota and size in MiB, labels, creation time (ms since
    the epoch), and the state and owner of a creation or removal in progress."""

    name: str
    kind: str
    quota_mib: int | None
    size_mib: int | None
    labels: dict[str, str]
    created_at: int
    state: str = "ready"
    owner: ProcessIdentity | None = None


@dataclass(frozen=True)
class SandboxRecord:
    """A sandbox's row (what ``Sandbox.list`` returns): name, backend, owning process, status, the configuration it
    was created with, the pytest run that made it, and its creation time (ms since the epoch)."""

    name: str
    backend: str
    owner: ProcessIdentity | None
    status: str
    config: dict = field(default_factory=dict)
    run_id: str | None = None
    created_at: int = 0


@dataclass(frozen=True)
class MountRecord:
    """One named volume mounted by a sandbox: where, whether read-only, and the process that holds it."""

    sandbox: str
    volume_name: str
    guest_path: str
    readonly: bool
    owner: ProcessIdentity


@dataclass(frozen=True)
class Event:
    """One line of the audit log: when (ms since the epoch), what happened, to which name, by which pid."""

    at: int
    kind: str
    subject: str
    pid: int


def _log_event(conn: sqlite3.Connection, kind: str, subject: str) -> None:
    conn.execute("INSERT INTO events (at, kind, subject, pid) VALUES (?, ?, ?, ?)", (now_ms(), kind, subject,
                                                                                     os.getpid()))


_VOLUME_COLUMNS = "name, kind, quota_mib, size_mib, labels, created_at, state, owner_pid, owner_start, owner_machine"


def _to_json(value: object) -> str:
    if value == {}:  # most volumes have no labels: json is imported on first need
        return "{}"
    import json

    return json.dumps(value, sort_keys=True)


def _from_json(text: str) -> dict:
    if text == "{}":
        return {}
    import json

    return json.loads(text)


def _volume_rows(conn: sqlite3.Connection, where: str, params: tuple = ()) -> list[tuple]:
    """Volume rows as plain tuples in ``_VOLUME_COLUMNS`` order (cheaper than ``sqlite3.Row`` lookups by name)."""
    cursor = conn.execute(f"SELECT {_VOLUME_COLUMNS} FROM volumes WHERE {where}", params)
    cursor.row_factory = None
    return cursor.fetchall()


def _volume_from_row(row: tuple) -> VolumeRecord:
    name, kind, quota_mib, size_mib, labels, created_at, state, owner_pid, owner_start, owner_machine = row
    owner = ProcessIdentity(owner_pid, owner_start, owner_machine or "") if owner_pid is not None else None
    return VolumeRecord(name, kind, quota_mib, size_mib, _from_json(labels), created_at, state, owner)


# A transition's owner, matched exactly (``IS``: NULL matches NULL, as in rows written before owner_machine).
_OWNED_BY = "owner_pid IS ? AND owner_start IS ? AND IFNULL(owner_machine, '') = ?"


def _owner_params(owner: ProcessIdentity | None) -> tuple:
    return (owner.pid, owner.start_ticks, owner.machine) if owner else (None, None, "")


def _abandoned(conn: sqlite3.Connection) -> list[VolumeRecord]:
    records = [_volume_from_row(r) for r in _volume_rows(conn, "state != 'ready'")]
    return [r for r in records if r.owner is None or not r.owner.is_alive()]


class AbandonedTransitions(Exception):
    """Raised (and its transaction rolled back) by a ``check_abandoned`` claim that found abandoned transitions: a
    signal to reap them first, caught by the volume manager and never seen by users."""

    def __init__(self, records: list[VolumeRecord]) -> None:
        super().__init__(", ".join(r.name for r in records))
        self.records = records


def _raise_if_abandoned(conn: sqlite3.Connection) -> None:
    abandoned = _abandoned(conn)
    if abandoned:
        raise AbandonedTransitions(abandoned)


def _ready_volumes(conn: sqlite3.Connection, rest: str = "", params: tuple = ()) -> list[VolumeRecord]:
    """The ready volumes (``rest`` narrows or orders them). A ready row never has an owner: only the transitions
    (creating, removing) do, and each one clears it when it ends in ``ready``."""
    cursor = conn.execute(
        f"SELECT name, kind, quota_mib, size_mib, labels, created_at FROM volumes WHERE state='ready'{rest}", params
    )
    cursor.row_factory = None
    return [_ready_record(*row) for row in cursor.fetchall()]


def _ready_record(name: str, kind: str, quota_mib: int | None, size_mib: int | None, labels: str,
                  created_at: int) -> VolumeRecord:
    # What the frozen dataclass's __init__ sets, in one step instead of one object.__setattr__ per field: a fifth of
    # the cost, and list() builds one record per volume. tests/store checks it equals the __init__-built record.
    record = object.__new__(VolumeRecord)
    object.__setattr__(record, "__dict__", {
        "name": name, "kind": kind, "quota_mib": quota_mib, "size_mib": size_mib, "labels": _from_json(labels),
        "created_at": created_at, "state": "ready", "owner": None,
    })
    return record


def _sandbox_from_row(row: sqlite3.Row) -> SandboxRecord:
    owner = ProcessIdentity(row["pid"], row["pid_start"], row["pid_machine"] or "") if row["pid"] is not None else None
    return SandboxRecord(
        name=row["name"],
        backend=row["backend"],
        owner=owner,
        status=row["status"],
        config=_from_json(row["config"]),
        run_id=row["run_id"],
        created_at=row["created_at"],
    )


class _Reading:
    """``with store._read() as conn``: this thread's connection for the length of one operation."""

    __slots__ = ("conn", "path")

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        self.conn = _connection.acquire(self.path)
        return self.conn

    def __exit__(self, *exc: object) -> None:
        _connection.release(self.path, self.conn)  # rolls back whatever a failed COMMIT or ROLLBACK left open


class _Writing(_Reading):
    """``with store._write() as conn``: one write transaction (``BEGIN IMMEDIATE``), committed unless it raised."""

    __slots__ = ()

    def __enter__(self) -> sqlite3.Connection:
        conn = super().__enter__()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except BaseException:
            _connection.release(self.path, conn)
            raise
        return conn

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            self.conn.execute("ROLLBACK" if exc_type is not None else "COMMIT")
        finally:
            _connection.release(self.path, self.conn)


class Store:
    """Typed access to ``<home>/db/msb.db``."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.path = self.home / "db" / "msb.db"

    # -- connections ---------------------------------------------------------------------------------------------

    def _read(self) -> _Reading:
        return _Reading(self.path)

    def _write(self) -> _Writing:
        """One write transaction, holding SQLite's write lock from its first statement."""
        return _Writing(self.path)

    def events(self, subject: str | None = None) -> list[Event]:
        """The audit log, oldest first (optionally for one volume or sandbox name)."""
        with self._read() as conn:
            if subject is None:
                rows = conn.execute("SELECT * FROM events ORDER BY id").fetchall()
            else:
                rows = conn.execute("SELECT * FROM events WHERE subject=? ORDER BY id", (subject,)).fetchall()
        return [Event(r["at"], r["kind"], r["subject"], r["pid"]) for r in rows]

    def schema_version(self) -> int:
        """The schema version of the database (SQLite's ``user_version``)."""
        with self._read() as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    # -- volumes ---------------------------------------------------------------------------------------------------

    def begin_volume_create(self, record: VolumeRecord, owner: ProcessIdentity, *,
                            check_abandoned: bool = False) -> None:
        """Claim ``record.name`` (state ``creating``); exactly one of several racing processes wins.

        With ``check_abandoned`` the transaction first looks for abandoned transitions and, if there are any, claims
        nothing and raises ``AbandonedTransitions`` with them (reap those, then call again): the check a reap makes
        before every create, without a read of its own.
        """
        try:
            with self._write() as conn:
                if check_abandoned:
                    _raise_if_abandoned(conn)
                conn.execute(
                    "INSERT INTO volumes (name, kind, quota_mib, size_mib, labels, created_at, state, owner_pid, "
                    "owner_start, owner_machine) VALUES (?, ?, ?, ?, ?, ?, 'creating', ?, ?, ?)",
                    (
                        record.name,
                        record.kind,
                        record.quota_mib,
                        record.size_mib,
                        _to_json(record.labels),
                        record.created_at,
                        owner.pid,
                        owner.start_ticks,
                        owner.machine,
                    ),
                )
        except sqlite3.IntegrityError:
            raise VolumeAlreadyExistsError(record.name) from None

    def finish_volume_create(self, name: str) -> None:
        """Mark a volume being created ``ready`` (its files are in place)."""
        with self._write() as conn:
            done = conn.execute(
                "UPDATE volumes SET state='ready', owner_pid=NULL, owner_start=NULL, owner_machine=NULL "
                "WHERE name=? AND state='creating'",
                (name,),
            )
            if done.rowcount:
                _log_event(conn, "volume.created", name)

    def begin_volume_remove(self, name: str, owner: ProcessIdentity, *,
                            check_abandoned: bool = False) -> VolumeRecord:
        """Mark a ready volume ``removing`` after checking, under the write lock, that no live sandbox mounts it.

        ``check_abandoned`` as for ``begin_volume_create``.
        """
        with self._write() as conn:
            if check_abandoned:
                _raise_if_abandoned(conn)
            found = _ready_volumes(conn, " AND name=?", (name,))
            if not found:
                raise VolumeNotFoundError(name)
            self._reap_dead_mounts(conn)
            user = conn.execute(
                "SELECT s.name FROM mounts m JOIN sandboxes s ON s.id = m.sandbox_id WHERE m.volume_name=? "
                "ORDER BY m.id LIMIT 1",
                (name,),
            ).fetchone()
            if user is not None:
                raise VolumeInUseError(name, user["name"])
            conn.execute(
                "UPDATE volumes SET state='removing', owner_pid=?, owner_start=?, owner_machine=? WHERE name=?",
                (owner.pid, owner.start_ticks, owner.machine, name),
            )
            return found[0]

    def delete_volume_row(self, name: str, owner: ProcessIdentity) -> None:
        """Drop a volume's row once its files are gone (ends a ``removing``, or rolls back a ``creating``) — only
        while ``owner`` still holds that transition, so a newer claim on the name is never touched."""
        with self._write() as conn:
            removing = conn.execute(
                f"SELECT 1 FROM volumes WHERE name=? AND state='removing' AND {_OWNED_BY}",
                (name, *_owner_params(owner)),
            ).fetchone()
            conn.execute(
                f"DELETE FROM volumes WHERE name=? AND state != 'ready' AND {_OWNED_BY}",
                (name, *_owner_params(owner)),
            )
            if removing:
                _log_event(conn, "volume.removed", name)

    def revert_volume_remove(self, name: str, owner: ProcessIdentity) -> None:
        """Give up a removal ``owner`` began (its files are all still in place)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE volumes SET state='ready', owner_pid=NULL, owner_start=NULL, owner_machine=NULL "
                f"WHERE name=? AND state='removing' AND {_OWNED_BY}",
                (name, *_owner_params(owner)),
            )

    def claim_abandoned(self, record: VolumeRecord, owner: ProcessIdentity) -> bool:
        """Take over a transition whose process died; exactly one of several racing reapers gets it."""
        old = record.owner
        with self._write() as conn:
            done = conn.execute(
                "UPDATE volumes SET owner_pid=?, owner_start=?, owner_machine=? "
                f"WHERE name=? AND state=? AND {_OWNED_BY}",
                (*_owner_params(owner), record.name, record.state, *_owner_params(old)),
            )
            return done.rowcount == 1

    def get_volume(self, name: str) -> VolumeRecord | None:
        """The ready volume called ``name``, or None."""
        with self._read() as conn:
            found = _ready_volumes(conn, " AND name=?", (name,))
        return found[0] if found else None

    def list_volumes(self) -> list[VolumeRecord]:
        """Every ready volume, by name."""
        with self._read() as conn:
            return _ready_volumes(conn, " ORDER BY name")

    def abandoned_volume_transitions(self) -> list[VolumeRecord]:
        """Volumes left ``creating`` or ``removing`` by a process that has died."""
        with self._read() as conn:
            return _abandoned(conn)

    def volumes_and_abandoned(self, name: str | None = None) -> tuple[list[VolumeRecord], list[VolumeRecord]]:
        """In one go: the ready volumes (just ``name`` if given, else all by name) and the abandoned transitions."""
        with self._read() as conn:
            abandoned = _abandoned(conn)
            if name is None:
                return _ready_volumes(conn, " ORDER BY name"), abandoned
            return _ready_volumes(conn, " AND name=?", (name,)), abandoned

    def transitional_volume_names(self) -> set[str]:
        """The names of volumes being created or removed right now."""
        with self._read() as conn:
            return {r[0] for r in conn.execute("SELECT name FROM volumes WHERE state != 'ready'")}

    # -- sandboxes and mounts --------------------------------------------------------------------------------------

    def add_sandbox(self, record: SandboxRecord) -> None:
        """Record a new sandbox; SandboxAlreadyExistsError when a record of its name exists."""
        owner = record.owner
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO sandboxes (name, backend, pid, pid_start, pid_machine, status, config, run_id, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.name,
                        record.backend,
                        owner.pid if owner else None,
                        owner.start_ticks if owner else None,
                        owner.machine if owner else None,
                        record.status,
                        _to_json(record.config),
                        record.run_id,
                        record.created_at or now_ms(),
                    ),
                )
        except sqlite3.IntegrityError:
            raise SandboxAlreadyExistsError(record.name) from None

    def update_sandbox(self, name: str, *, status: str, owner: ProcessIdentity | None = None) -> None:
        """Set a sandbox's status (and its owning process, when given); SandboxNotFoundError when none has that name."""
        with self._write() as conn:
            if owner is None:
                cur = conn.execute("UPDATE sandboxes SET status=? WHERE name=?", (status, name))
            else:
                cur = conn.execute(
                    "UPDATE sandboxes SET status=?, pid=?, pid_start=?, pid_machine=? WHERE name=?",
                    (status, owner.pid, owner.start_ticks, owner.machine, name),
                )
            if cur.rowcount == 0:
                raise SandboxNotFoundError(name)

    def get_sandbox(self, name: str) -> SandboxRecord | None:
        """The sandbox called ``name``, or None."""
        with self._read() as conn:
            row = conn.execute("SELECT * FROM sandboxes WHERE name=?", (name,)).fetchone()
        return _sandbox_from_row(row) if row is not None else None

    def list_sandboxes(self) -> list[SandboxRecord]:
        """Every recorded sandbox, oldest first."""
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM sandboxes ORDER BY created_at, name").fetchall()
        return [_sandbox_from_row(r) for r in rows]

    def remove_sandbox(self, name: str) -> None:
        """Forget a sandbox and (by cascade) its mount records."""
        with self._write() as conn:
            conn.execute("DELETE FROM sandboxes WHERE name=?", (name,))

    def attach_volume(
        self, sandbox: str, volume_name: str, guest_path: str, readonly: bool, owner: ProcessIdentity
    ) -> None:
        """Record that ``owner`` (the sandbox's VMM or namespace process) mounts a named volume."""
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM volumes WHERE name=? AND state='ready'", (volume_name,)).fetchone() is None:
                raise VolumeNotFoundError(volume_name)
            row = conn.execute("SELECT id FROM sandboxes WHERE name=?", (sandbox,)).fetchone()
            if row is None:
                raise SandboxNotFoundError(sandbox)
            conn.execute(
                "INSERT INTO mounts (sandbox_id, volume_name, guest_path, readonly, pid, pid_start, pid_machine) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row["id"], volume_name, guest_path, int(readonly), owner.pid, owner.start_ticks, owner.machine),
            )

    def detach_volumes(self, sandbox: str) -> None:
        """Forget every volume mount of a sandbox."""
        with self._write() as conn:
            conn.execute("DELETE FROM mounts WHERE sandbox_id IN (SELECT id FROM sandboxes WHERE name=?)", (sandbox,))

    def mounts_of(self, volume_name: str) -> list[MountRecord]:
        """Who mounts a named volume, in the order they attached it."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT s.name AS sandbox, m.* FROM mounts m JOIN sandboxes s ON s.id = m.sandbox_id "
                "WHERE m.volume_name=? ORDER BY m.id",
                (volume_name,),
            ).fetchall()
        return [
            MountRecord(r["sandbox"], r["volume_name"], r["guest_path"], bool(r["readonly"]),
                        ProcessIdentity(r["pid"], r["pid_start"], r["pid_machine"] or ""))
            for r in rows
        ]

    def reap_dead_mounts(self) -> int:
        """Drop the mount records of processes that have died; returns how many."""
        with self._write() as conn:
            return self._reap_dead_mounts(conn)

    @staticmethod
    def _reap_dead_mounts(conn: sqlite3.Connection) -> int:
        rows = conn.execute("SELECT id, pid, pid_start, pid_machine FROM mounts").fetchall()
        dead = [r["id"] for r in rows
                if not ProcessIdentity(r["pid"], r["pid_start"], r["pid_machine"] or "").is_alive()]
        conn.executemany("DELETE FROM mounts WHERE id=?", [(i,) for i in dead])
        return len(dead)
