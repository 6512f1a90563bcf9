"""The store's SQLite connections: opened once per thread and database, reused by every operation after that.

Opening a connection costs more than most operations do (the WAL switch, the pragmas, the schema check, and on the
last close a checkpoint), so each thread keeps the connections it opened, keyed by database path:

- Threads: a connection is only ever used by the thread that opened it (``check_same_thread`` stays on).
- Processes: every process opens its own; SQLite's locks (``BEGIN IMMEDIATE``) serialise writers across them, and
  each statement outside a transaction reads the newest committed state, so a reused connection sees other processes'
  writes as a fresh one would.
- ``fork``: a child never uses a connection it inherited. Before a fork the gate waits for the operations in flight in
  other threads to finish, so nothing a child inherits is inside a transaction; in the child the inherited connections
  are set aside unused (those of threads that did not survive the fork are released by the interpreter, idle), and the
  child opens its own on first use. A pid check covers forks that bypass ``os.register_at_fork``.
- A database replaced or deleted under a cached connection (a removed home made again at the same path) is noticed by
  its inode and opened afresh, as a connection per operation would have.
- The schema is checked once per connection. A connection is returned to the cache only outside any transaction; one
  whose rollback failed is closed instead. At most ``_PER_THREAD`` connections per thread stay open (oldest closed).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from pytest_microsandbox.store._schema import SCHEMA_VERSION, migrate

BUSY_TIMEOUT_S = 30.0
_PER_THREAD = 8
_FORK_WAIT_S = BUSY_TIMEOUT_S + 5.0  # a fork waits at most this long for other threads' operations


def _is_locked(err: BaseException) -> bool:
    return isinstance(err, sqlite3.OperationalError) and "locked" in str(err)


def _prepare(conn: sqlite3.Connection) -> None:
    """WAL mode, the pragmas, and the schema check, once per connection.

    Processes opening a brand-new database at once can get "database is locked" from the switch to WAL without
    SQLite's busy handler being consulted: retry that first setup for as long as a busy wait would have lasted.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA synchronous=NORMAL")
            if conn.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                migrate(conn)  # under the write lock: upgrades, or refuses a newer schema
            return
        except sqlite3.OperationalError as err:
            if not _is_locked(err) or time.monotonic() >= deadline:
                raise
            import random  # only racing first opens get here

            time.sleep(random.uniform(0, delay))
            delay = min(delay * 2, 0.25)


class _Cached:
    __slots__ = ("conn", "dev", "ino")

    def __init__(self, conn: sqlite3.Connection, dev: int, ino: int) -> None:
        self.conn, self.dev, self.ino = conn, dev, ino


class _ThreadState(threading.local):
    """One thread's open connections (by database path) and how many store operations it is inside."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.open: dict[str, _Cached] = {}
        self.depth = 0


class _ForkGate:
    """Counts the store operations in flight, so a fork can wait until no other thread is inside one."""

    def __init__(self, busy: int = 0) -> None:
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.busy = busy
        self.forking = False

    def enter(self, state: _ThreadState) -> None:
        with self.lock:
            while self.forking and not state.depth:  # a thread already inside an operation may nest
                self.cond.wait()
            self.busy += 1
        state.depth += 1

    def leave(self, state: _ThreadState) -> None:
        state.depth -= 1
        with self.lock:
            self.busy -= 1
            if self.forking:
                self.cond.notify_all()

    def before_fork(self, state: _ThreadState) -> None:
        with self.lock:
            self.forking = True
            deadline = time.monotonic() + _FORK_WAIT_S
            while self.busy > state.depth:  # the forking thread's own operations cannot finish before it forks
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)

    def after_fork_in_parent(self) -> None:
        with self.lock:
            self.forking = False
            self.cond.notify_all()


_state = _ThreadState()
_gate = _ForkGate()
_inherited: list[sqlite3.Connection] = []  # connections a forked child got from its parent: kept, never used


def _forget_inherited(state: _ThreadState) -> None:
    _inherited.extend(cached.conn for cached in state.open.values())
    state.open = {}
    state.pid = os.getpid()


def _after_fork_in_child() -> None:
    global _gate
    _gate = _ForkGate(busy=_state.depth)  # fresh locks: another thread may have held the old ones at the fork
    _forget_inherited(_state)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=lambda: _gate.before_fork(_state), after_in_parent=lambda: _gate.after_fork_in_parent(),
                        after_in_child=_after_fork_in_child)


def _open(path: Path) -> _Cached:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        _prepare(conn)
        st = os.stat(path)
    except BaseException:
        conn.close()
        raise
    return _Cached(conn, st.st_dev, st.st_ino)


def _discard(state: _ThreadState, key: str) -> None:
    cached = state.open.pop(key, None)
    if cached is not None:
        cached.conn.close()


def acquire(path: Path) -> sqlite3.Connection:
    """This thread's connection to the database at ``path``, opened on first use; pair with ``release``."""
    state = _state
    _gate.enter(state)
    try:
        if state.pid != os.getpid():  # forked without the at-fork hooks running
            _forget_inherited(state)
        key = str(path)
        cached = state.open.get(key)
        if cached is not None:
            if state.depth > 1:
                return cached.conn  # inside another operation of this thread: share its connection (and transaction)
            if not _usable(cached, key):
                _discard(state, key)
                cached = None
        if cached is None:
            cached = state.open[key] = _open(path)
            if state.depth == 1:  # never close what an enclosing operation may be using
                while len(state.open) > _PER_THREAD:
                    _discard(state, next(iter(state.open)))
        return cached.conn
    except BaseException:
        _gate.leave(state)
        raise


def _usable(cached: _Cached, key: str) -> bool:
    try:
        st = os.stat(key)
    except FileNotFoundError:
        return False  # the database was removed: open (and so create) what is there now
    if st.st_ino != cached.ino or st.st_dev != cached.dev:
        return False  # replaced by another file
    return not cached.conn.in_transaction  # never expected: a transaction a failed release left open


def release(path: Path, conn: sqlite3.Connection) -> None:
    """End an operation. The outermost one hands the connection back outside any transaction (rolling back what is
    left open), or closes it if even that fails."""
    state = _state
    try:
        if state.depth == 1 and conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                key = str(path)
                cached = state.open.get(key)
                if cached is not None and cached.conn is conn:
                    _discard(state, key)
                else:
                    conn.close()
    finally:
        _gate.leave(state)
