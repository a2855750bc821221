"""The ``sqlite`` state backend: every namespace of a node in one SQLite file.

Several worker processes on one node share the file (``topology.state.sqlite.path``):
it runs in WAL mode, so readers do not block the writer, and every connection
waits up to :data:`BUSY_TIMEOUT_S` for another's write lock instead of failing.
``synchronous=FULL`` makes a returned :meth:`SqliteStore.prepare` or
:meth:`SqliteStore.commit` survive a power cut, not only a crash.

Tables (all keyed by namespace):

- ``data (namespace, key BLOB, value BLOB)``: the committed key/value pairs;
- ``meta (namespace, txid)``: the txid they were committed at (no row: 0);
- ``prepared (namespace, txid, changes BLOB, held BLOB)``: at most one prepared
  transaction; ``changes`` is a msgpack map of key -> value, or nil for a delete.

A store is used by one thread at a time (the protocol's task thread), not
necessarily the one that opened it.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgpack

from .store import Changes, StateError, decode_changes, encode_changes

SETTING = "topology.state.sqlite.path"
BUSY_TIMEOUT_S = 10.0  # a commit of another worker on the node holds the write lock for milliseconds
SCHEMA_VERSION = 1  # PRAGMA user_version of a file this module wrote

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS data (namespace TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, "
    "PRIMARY KEY (namespace, key)) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS meta (namespace TEXT PRIMARY KEY, txid INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS prepared (namespace TEXT PRIMARY KEY, txid INTEGER NOT NULL, "
    "changes BLOB NOT NULL, held BLOB NOT NULL)",
)




class SqliteStore:
    """One namespace's state in a SQLite file; see the module docstring for the layout."""

    def __init__(self, conn: sqlite3.Connection, path: str, namespace: str):
        self._conn = conn
        self._path = path
        self._ns = namespace

    @classmethod
    def open(cls, path: str, namespace: str) -> SqliteStore:
        """Open (creating if missing) the state file at ``path`` and its tables; may block for the
        busy timeout while another process holds the write lock. Raises :class:`StateError` if the
        file cannot be used."""
        full = os.path.expanduser(path)
        conn = None
        try:
            if full != ":memory:":
                Path(full).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(full, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            _enter_wal(conn, time.monotonic() + BUSY_TIMEOUT_S)
            conn.execute("PRAGMA synchronous=FULL")
            _create_schema(conn)
        except (OSError, sqlite3.Error, _SchemaMismatch) as e:
            if conn is not None:
                conn.close()
            shown = repr(path) if full == path else f"{path!r} ({full})"
            raise StateError(f"{SETTING} is {shown}, which cannot be used as the state database: {e}. "
                             f"Point {SETTING} at a file StreamGale may create and write (its folder writable), "
                             f"or move away a file there that is not a StreamGale state database") from e
        return cls(conn, full, namespace)

    def load(self) -> tuple[int, dict[bytes, bytes]]:
        with self._transaction("load", "BEGIN") as cur:
            row = cur.execute("SELECT txid FROM meta WHERE namespace = ?", (self._ns,)).fetchone()
            data = cur.execute("SELECT key, value FROM data WHERE namespace = ?", (self._ns,)).fetchall()
        return (0 if row is None else row[0]), {bytes(k): bytes(v) for k, v in data}

    def prepared(self) -> tuple[int, bytes] | None:
        with self._transaction("prepared", "BEGIN") as cur:
            row = cur.execute("SELECT txid, held FROM prepared WHERE namespace = ?", (self._ns,)).fetchone()
        return None if row is None else (row[0], bytes(row[1]))

    def prepare(self, txid: int, changes: Changes, held: bytes) -> None:
        blob = encode_changes(changes)
        with self._transaction("prepare") as cur:
            cur.execute("INSERT OR REPLACE INTO prepared (namespace, txid, changes, held) VALUES (?, ?, ?, ?)",
                        (self._ns, txid, blob, held))

    def commit(self, txid: int) -> bytes | None:
        with self._transaction("commit") as cur:
            row = cur.execute("SELECT txid, changes, held FROM prepared WHERE namespace = ?", (self._ns,)).fetchone()
            if row is None or row[0] != txid:
                return None
            changes = self._decode(row[1])
            cur.executemany("DELETE FROM data WHERE namespace = ? AND key = ?",
                            [(self._ns, k) for k, v in changes.items() if v is None])
            cur.executemany("INSERT OR REPLACE INTO data (namespace, key, value) VALUES (?, ?, ?)",
                            [(self._ns, k, v) for k, v in changes.items() if v is not None])
            cur.execute("INSERT OR REPLACE INTO meta (namespace, txid) VALUES (?, ?)", (self._ns, txid))
            cur.execute("DELETE FROM prepared WHERE namespace = ?", (self._ns,))
            return bytes(row[2])

    def rollback(self) -> bytes | None:
        with self._transaction("rollback") as cur:
            row = cur.execute("SELECT held FROM prepared WHERE namespace = ?", (self._ns,)).fetchone()
            cur.execute("DELETE FROM prepared WHERE namespace = ?", (self._ns,))
        return None if row is None else bytes(row[0])

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _transaction(self, op: str, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Cursor]:
        """One transaction: committed if the block returns, rolled back if it raises. Writers take
        the write lock at BEGIN IMMEDIATE, so a read-then-write cannot be overtaken by another process."""
        try:
            cur = self._conn.execute(begin)
            try:
                yield cur
            except BaseException:
                self._conn.rollback()
                raise
            self._conn.commit()
        except sqlite3.Error as e:
            raise StateError(f"{op} of state namespace {self._ns!r} in {self._path} ({SETTING}) failed: {e}") from e

    def _decode(self, blob: bytes) -> dict[bytes, bytes | None]:
        try:
            return decode_changes(blob)
        except (ValueError, msgpack.UnpackException) as e:
            raise StateError(f"the prepared transaction of state namespace {self._ns!r} in {self._path} "
                             f"({SETTING}) is corrupt: {e}") from e


class _SchemaMismatch(Exception):
    pass


WAL_RETRY_S = 0.005  # between tries of the switch to WAL while another connection sets the file up


def _enter_wal(conn: sqlite3.Connection, deadline: float) -> None:
    """Switch the file to WAL mode. The switch needs the exclusive lock, and SQLite answers it with
    an immediate SQLITE_BUSY, without waiting in the busy handler, while another connection is
    setting the same file up (waiting could deadlock); so it is retried until ``deadline``."""
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if getattr(e, "sqlite_errorcode", None) not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) \
                    or time.monotonic() >= deadline:
                raise
        time.sleep(WAL_RETRY_S)


def _create_schema(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise _SchemaMismatch(f"its schema version is {version}, this StreamGale reads {SCHEMA_VERSION}")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
