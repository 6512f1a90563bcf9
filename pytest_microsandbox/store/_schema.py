"""The store's schema as numbered migrations, applied in order and recorded in ``PRAGMA user_version``."""

from __future__ import annotations

import sqlite3

from pytest_microsandbox.errors import MicrosandboxError

# Each entry upgrades from version N to N+1. Append only: never edit a released migration.
MIGRATIONS: tuple[str, ...] = (
    # 1: volumes, sandboxes and their mounts. Transitional states (creating, removing) carry the owning process, so
    # a crash mid-way is finished or rolled back by the next process that opens the store.
    """
    CREATE TABLE volumes (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        kind        TEXT NOT NULL CHECK (kind IN ('dir', 'disk')),
        quota_mib   INTEGER,
        size_mib    INTEGER,
        labels      TEXT NOT NULL DEFAULT '{}',
        created_at  INTEGER NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'removing')),
        owner_pid   INTEGER,
        owner_start INTEGER
    );
    CREATE TABLE sandboxes (
        id          INTEGER PRIMARY KEY,
        name        TEXT NOT NULL UNIQUE,
        backend     TEXT NOT NULL,
        pid         INTEGER,
        pid_start   INTEGER,
        status      TEXT NOT NULL,
        config      TEXT NOT NULL DEFAULT '{}',
        run_id      TEXT,
        created_at  INTEGER NOT NULL
    );
    CREATE TABLE mounts (
        id          INTEGER PRIMARY KEY,
        sandbox_id  INTEGER NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
        volume_name TEXT NOT NULL,
        guest_path  TEXT NOT NULL,
        readonly    INTEGER NOT NULL DEFAULT 0,
        pid         INTEGER NOT NULL,
        pid_start   INTEGER NOT NULL
    );
    CREATE INDEX mounts_by_volume ON mounts (volume_name);
    """,
    # 2: an append-only audit log of lifecycle events (``msb events``, and tests that count creations/removals).
    """
    CREATE TABLE events (
        id          INTEGER PRIMARY KEY,
        at          INTEGER NOT NULL,
        kind        TEXT NOT NULL,
        subject     TEXT NOT NULL,
        pid         INTEGER NOT NULL
    );
    CREATE INDEX events_by_subject ON events (subject);
    """,
    # 3: the machine (host name, boot, pid namespace) each owning pid belongs to: a home can be shared with another
    # host or a container, whose pids this one cannot judge (NULL: a row written here before this version).
    """
    ALTER TABLE volumes ADD COLUMN owner_machine TEXT;
    ALTER TABLE sandboxes ADD COLUMN pid_machine TEXT;
    ALTER TABLE mounts ADD COLUMN pid_machine TEXT
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNewError(MicrosandboxError):
    """The store was written by a newer pytest-microsandbox."""


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the database up to ``SCHEMA_VERSION`` inside one write transaction (safe against racing processes)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise SchemaTooNewError(
                f"the store's schema is version {version}, newer than this pytest-microsandbox knows "
                f"({SCHEMA_VERSION}); upgrade pytest-microsandbox"
            )
        for number in range(version, SCHEMA_VERSION):
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
