"""The usage ledger: one SQLite row per call.

Rows are committed on the caller's thread, before the answer completes, so killing the gateway loses no finished call.
That is cheap enough for the event loop: in WAL mode with synchronous=NORMAL a commit appends to the WAL without
fsync (~40 us, measured; a hop to a writer thread and back costs ~150 us). The expensive part, the checkpoint that
copies the WAL into the database and fsyncs, is switched off on the writing connection and run by checkpoint()
from a worker thread instead; it also keeps the WAL from growing without bound.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from .record import stored_columns


def connect(path: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA busy_timeout=2000")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def open_db(path: str, outbox: bool = False) -> sqlite3.Connection:
    """Opens (and creates or upgrades) the ledger; the connection does not checkpoint by itself. outbox: rows are
    shipped to a shared ledger, so unshipped rows are indexed (otherwise the index is one more page a row writes)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    types = stored_columns()
    columns = ", ".join(f'"{c}" {kind}' for c, kind in types.items() if c != "id")
    db.execute(f"CREATE TABLE IF NOT EXISTS calls (id TEXT PRIMARY KEY, {columns})")
    have = {row[1] for row in db.execute("PRAGMA table_info(calls)")}
    for column, kind in types.items():  # a ledger written by an older version gains the new columns
        if column not in have:
            db.execute(f'ALTER TABLE calls ADD COLUMN "{column}" {kind}')
    if "shipped" not in have:  # the outbox mark: not a field of the record, not shipped itself
        db.execute("ALTER TABLE calls ADD COLUMN shipped INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX IF NOT EXISTS calls_started ON calls (started_at)")
    if outbox:
        db.execute("CREATE INDEX IF NOT EXISTS calls_unshipped ON calls (shipped) WHERE shipped = 0")
    else:
        db.execute("DROP INDEX IF EXISTS calls_unshipped")
    return db


class LedgerDB:
    def __init__(self, path: str, jsonl: str = "", outbox: bool = False):
        self.path = path
        self.jsonl = jsonl
        self.outbox = outbox
        self._db = open_db(path, outbox)
        # Line-buffered append: one write() per row, no fsync (like the WAL commit); readers tail it.
        self._mirror = open(jsonl, "a", buffering=1, encoding="utf-8") if jsonl else None
        self._columns = list(stored_columns())
        quoted = ", ".join(f'"{c}"' for c in self._columns)  # "group" is an SQL keyword
        self._sql = f"INSERT OR REPLACE INTO calls ({quoted}) VALUES ({', '.join('?' for _ in self._columns)})"
        self._checkpointer: sqlite3.Connection | None = None
        self.unchecked = 0  # rows committed since the last checkpoint

    def write(self, row: dict) -> None:
        """Commits one row (and mirrors it); raises whatever stops it (a full disk, a locked file, bad text):
        the caller counts and reports failures."""
        self._db.execute(self._sql, tuple(row[c] for c in self._columns))  # autocommit: one transaction
        self.unchecked += 1
        if self._mirror is not None:
            self._mirror.write(json.dumps(row, separators=(",", ":")) + "\n")

    def checkpoint(self, retention_s: float | None = None) -> int:
        """Deletes rows past the retention, then moves the WAL into the database (with fsync). Blocking: call
        from a worker thread. Returns the number of rows deleted."""
        if self._checkpointer is None:
            self._checkpointer = connect(self.path)
        self.unchecked = 0
        deleted = 0
        if retention_s is not None:
            cursor = self._checkpointer.execute("DELETE FROM calls WHERE started_at < ?", (time.time() - retention_s,))
            deleted = cursor.rowcount
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return deleted

    # --- the outbox (blocking: call from a worker thread) ---------------------------------------------------------
    def _outbox(self) -> sqlite3.Connection:
        if self._checkpointer is None:
            self._checkpointer = connect(self.path)
        return self._checkpointer

    def unshipped(self, limit: int) -> list[tuple]:
        """Up to limit rows not yet in the shared ledger, oldest first: (rowid, *columns)."""
        quoted = ", ".join(f'"{c}"' for c in self._columns)
        return self._outbox().execute(f"SELECT rowid, {quoted} FROM calls WHERE shipped = 0 ORDER BY rowid LIMIT ?",
                                      (limit,)).fetchall()

    def mark_shipped(self, rowids: list[int]) -> None:
        db = self._outbox()
        for start in range(0, len(rowids), 500):
            chunk = rowids[start:start + 500]
            db.execute(f"UPDATE calls SET shipped = 1 WHERE rowid IN ({', '.join('?' for _ in chunk)})", chunk)

    def backlog(self) -> int:
        return self._outbox().execute("SELECT COUNT(*) FROM calls WHERE shipped = 0").fetchone()[0]

    def forget_shipped(self, older_than_s: float) -> int:
        """The outbox keeps shipped rows for a while (a local copy), then lets them go."""
        cursor = self._outbox().execute("DELETE FROM calls WHERE shipped = 1 AND started_at < ?",
                                        (time.time() - older_than_s,))
        return cursor.rowcount

    def close(self) -> None:
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self._db.close()
        if self._checkpointer is not None:
            self._checkpointer.close()
        if self._mirror is not None:
            self._mirror.close()
