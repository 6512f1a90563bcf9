"""The metadata store: SQLite (WAL) at ``<home>/db/msb.db``, holding volumes, sandboxes and their mounts.

A connection is opened per operation, so the store is safe to use from threads (the async API) and from many
processes (xdist workers): SQLite's write lock (``BEGIN IMMEDIATE``) serialises the read-check-write sequences.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tenacity import retry, retry_if_exception, stop_after_delay, wait_random_exponential

from pytest_microsandbox.errors import (
    SandboxNotFoundError,
    VolumeAlreadyExistsError,
    VolumeInUseError,
    VolumeNotFoundError,
)
from pytest_microsandbox.store._liveness import ProcessIdentity
from pytest_microsandbox.store._schema import SCHEMA_VERSION, migrate

__all__ = ["SCHEMA_VERSION", "Event", "MountRecord", "ProcessIdentity", "SandboxRecord", "Store", "VolumeRecord"]

_BUSY_TIMEOUT_S = 30.0
_migrated: set[Path] = set()


def _is_locked(err: BaseException) -> bool:
    return isinstance(err, sqlite3.OperationalError) and "locked" in str(err)


# Processes opening a brand-new database at once can get "database is locked" from the switch to WAL without
# SQLite's busy handler being consulted: retry that first setup for as long as a busy wait would have lasted.
@retry(retry=retry_if_exception(_is_locked), stop=stop_after_delay(_BUSY_TIMEOUT_S),
       wait=wait_random_exponential(multiplier=0.005, max=0.25), reraise=True)
def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=NORMAL")
    if path not in _migrated:
        migrate(conn)
        _migrated.add(path)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class VolumeRecord:
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
    name: str
    backend: str
    owner: ProcessIdentity | None
    status: str
    config: dict = field(default_factory=dict)
    run_id: str | None = None
    created_at: int = 0


@dataclass(frozen=True)
class MountRecord:
    sandbox: str
    volume_name: str
    guest_path: str
    readonly: bool
    owner: ProcessIdentity


@dataclass(frozen=True)
class Event:
    at: int
    kind: str
    subject: str
    pid: int


def _log_event(conn: sqlite3.Connection, kind: str, subject: str) -> None:
    conn.execute("INSERT INTO events (at, kind, subject, pid) VALUES (?, ?, ?, ?)", (now_ms(), kind, subject,
                                                                                     os.getpid()))


def _volume_from_row(row: sqlite3.Row) -> VolumeRecord:
    owner = ProcessIdentity(row["owner_pid"], row["owner_start"]) if row["owner_pid"] is not None else None
    return VolumeRecord(
        name=row["name"],
        kind=row["kind"],
        quota_mib=row["quota_mib"],
        size_mib=row["size_mib"],
        labels=json.loads(row["labels"]),
        created_at=row["created_at"],
        state=row["state"],
        owner=owner,
    )


def _sandbox_from_row(row: sqlite3.Row) -> SandboxRecord:
    owner = ProcessIdentity(row["pid"], row["pid_start"]) if row["pid"] is not None else None
    return SandboxRecord(
        name=row["name"],
        backend=row["backend"],
        owner=owner,
        status=row["status"],
        config=json.loads(row["config"]),
        run_id=row["run_id"],
        created_at=row["created_at"],
    )


class Store:
    """Typed access to ``<home>/db/msb.db``."""

    def __init__(self, home: Path) -> None:
        self.home = Path(home)
        self.path = self.home / "db" / "msb.db"

    # -- connections ---------------------------------------------------------------------------------------------

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            _prepare(conn, self.path)
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            yield conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, holding SQLite's write lock from its first statement."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def events(self, subject: str | None = None) -> list[Event]:
        """The audit log, oldest first (optionally for one volume or sandbox name)."""
        with self._read() as conn:
            if subject is None:
                rows = conn.execute("SELECT * FROM events ORDER BY id").fetchall()
            else:
                rows = conn.execute("SELECT * FROM events WHERE subject=? ORDER BY id", (subject,)).fetchall()
        return [Event(r["at"], r["kind"], r["subject"], r["pid"]) for r in rows]

    def schema_version(self) -> int:
        with self._read() as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    # -- volumes ---------------------------------------------------------------------------------------------------

    def begin_volume_create(self, record: VolumeRecord, owner: ProcessIdentity) -> None:
        """Claim ``record.name`` (state ``creating``); exactly one of several racing processes wins."""
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO volumes (name, kind, quota_mib, size_mib, labels, created_at, state, owner_pid, "
                    "owner_start) VALUES (?, ?, ?, ?, ?, ?, 'creating', ?, ?)",
                    (
                        record.name,
                        record.kind,
                        record.quota_mib,
                        record.size_mib,
                        json.dumps(record.labels, sort_keys=True),
                        record.created_at,
                        owner.pid,
                        owner.start_ticks,
                    ),
                )
        except sqlite3.IntegrityError:
            raise VolumeAlreadyExistsError(record.name) from None

    def finish_volume_create(self, name: str) -> None:
        with self._write() as conn:
            done = conn.execute(
                "UPDATE volumes SET state='ready', owner_pid=NULL, owner_start=NULL WHERE name=? AND state='creating'",
                (name,),
            )
            if done.rowcount:
                _log_event(conn, "volume.created", name)

    def begin_volume_remove(self, name: str, owner: ProcessIdentity) -> VolumeRecord:
        """Mark a ready volume ``removing`` after checking, under the write lock, that no live sandbox mounts it."""
        with self._write() as conn:
            row = conn.execute("SELECT * FROM volumes WHERE name=? AND state='ready'", (name,)).fetchone()
            if row is None:
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
                "UPDATE volumes SET state='removing', owner_pid=?, owner_start=? WHERE name=?",
                (owner.pid, owner.start_ticks, name),
            )
            return _volume_from_row(row)

    def delete_volume_row(self, name: str, owner: ProcessIdentity) -> None:
        """Drop a volume's row once its files are gone (ends a ``removing``, or rolls back a ``creating``) — only
        while ``owner`` still holds that transition, so a newer claim on the name is never touched."""
        with self._write() as conn:
            removing = conn.execute(
                "SELECT 1 FROM volumes WHERE name=? AND state='removing' AND owner_pid=? AND owner_start=?",
                (name, owner.pid, owner.start_ticks),
            ).fetchone()
            conn.execute(
                "DELETE FROM volumes WHERE name=? AND state != 'ready' AND owner_pid=? AND owner_start=?",
                (name, owner.pid, owner.start_ticks),
            )
            if removing:
                _log_event(conn, "volume.removed", name)

    def revert_volume_remove(self, name: str, owner: ProcessIdentity) -> None:
        """Give up a removal ``owner`` began (its files are all still in place)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE volumes SET state='ready', owner_pid=NULL, owner_start=NULL WHERE name=? AND state='removing' "
                "AND owner_pid=? AND owner_start=?",
                (name, owner.pid, owner.start_ticks),
            )

    def claim_abandoned(self, record: VolumeRecord, owner: ProcessIdentity) -> bool:
        """Take over a transition whose process died; exactly one of several racing reapers gets it."""
        old = record.owner
        with self._write() as conn:
            done = conn.execute(
                "UPDATE volumes SET owner_pid=?, owner_start=? WHERE name=? AND state=? "
                "AND owner_pid IS ? AND owner_start IS ?",
                (owner.pid, owner.start_ticks, record.name, record.state, old and old.pid, old and old.start_ticks),
            )
            return done.rowcount == 1

    def get_volume(self, name: str) -> VolumeRecord | None:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM volumes WHERE name=? AND state='ready'", (name,)).fetchone()
        return _volume_from_row(row) if row is not None else None

    def list_volumes(self) -> list[VolumeRecord]:
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM volumes WHERE state='ready' ORDER BY name").fetchall()
        return [_volume_from_row(r) for r in rows]

    def abandoned_volume_transitions(self) -> list[VolumeRecord]:
        """Volumes left ``creating`` or ``removing`` by a process that has died."""
        with self._read() as conn:
            rows = conn.execute("SELECT * FROM volumes WHERE state != 'ready'").fetchall()
        records = [_volume_from_row(r) for r in rows]
        return [r for r in records if r.owner is None or not r.owner.is_alive()]

    def transitional_volume_names(self) -> set[str]:
        with self._read() as conn:
            return {r[0] for r in conn.execute("SELECT name FROM volumes WHERE state != 'ready'")}

    # -- sandboxes and mounts --------------------------------------------------------------------------------------

    def add_sandbox(self, record: SandboxRecord) -> None:
        owner = record.owner
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO sandboxes (name, backend, pid, pid_start, status, config, run_id, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.name,
                        record.backend,
                        owner.pid if owner else None,
                        owner.start_ticks if owner else None,
                        record.status,
                        json.dumps(record.config, sort_keys=True),
                        record.run_id,
                        record.created_at or now_ms(),
                    ),
                )
        except sqlite3.IntegrityError:
            from pytest_microsandbox.errors import InvalidConfigError

            raise InvalidConfigError(f"sandbox already exists: {record.name}") from None

    def update_sandbox(self, name: str, *, status: str, owner: ProcessIdentity | None = None) -> None:
        with self._write() as conn:
            if owner is None:
                cur = conn.execute("UPDATE sandboxes SET status=? WHERE name=?", (status, name))
            else:
                cur = conn.execute(
                    "UPDATE sandboxes SET status=?, pid=?, pid_start=? WHERE name=?",
                    (status, owner.pid, owner.start_ticks, name),
                )
            if cur.rowcount == 0:
                raise SandboxNotFoundError(name)

    def get_sandbox(self, name: str) -> SandboxRecord | None:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM sandboxes WHERE name=?", (name,)).fetchone()
        return _sandbox_from_row(row) if row is not None else None

    def list_sandboxes(self) -> list[SandboxRecord]:
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
                "INSERT INTO mounts (sandbox_id, volume_name, guest_path, readonly, pid, pid_start) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (row["id"], volume_name, guest_path, int(readonly), owner.pid, owner.start_ticks),
            )

    def detach_volumes(self, sandbox: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM mounts WHERE sandbox_id IN (SELECT id FROM sandboxes WHERE name=?)", (sandbox,))

    def mounts_of(self, volume_name: str) -> list[MountRecord]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT s.name AS sandbox, m.* FROM mounts m JOIN sandboxes s ON s.id = m.sandbox_id "
                "WHERE m.volume_name=? ORDER BY m.id",
                (volume_name,),
            ).fetchall()
        return [
            MountRecord(r["sandbox"], r["volume_name"], r["guest_path"], bool(r["readonly"]),
                        ProcessIdentity(r["pid"], r["pid_start"]))
            for r in rows
        ]

    def reap_dead_mounts(self) -> int:
        with self._write() as conn:
            return self._reap_dead_mounts(conn)

    @staticmethod
    def _reap_dead_mounts(conn: sqlite3.Connection) -> int:
        rows = conn.execute("SELECT id, pid, pid_start FROM mounts").fetchall()
        dead = [r["id"] for r in rows if not ProcessIdentity(r["pid"], r["pid_start"]).is_alive()]
        conn.executemany("DELETE FROM mounts WHERE id=?", [(i,) for i in dead])
        return len(dead)
