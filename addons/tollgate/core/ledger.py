"""The usage ledger: one SQLite row per call.

A gateway's rows reach the disk before the answer completes, so killing the gateway loses no finished call: each
row is one append to the process's journal (Journal: one write(), no fsync; the same promise as an SQLite WAL commit
with synchronous=NORMAL, which it replaced: that commit cost the event loop ~0.1 ms a call in page writes and file
locks). JournalCommitter puts the journal into SQLite in batches, one transaction each, and empties it once all of
it is there; a journal whose process died is committed by the next process that opens the ledger. The checkpoint that
copies the WAL into the database and fsyncs is switched off on the writing connection and run by checkpoint() from
a worker thread instead; it also keeps the WAL from growing without bound.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import glob
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from .record import stored_columns

_compact = json.JSONEncoder(separators=(",", ":")).encode  # one encoder, not one per row (json.dumps with options)


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


class ClosedLedger(sqlite3.ProgrammingError):
    """The ledger was closed (a reload moved it, or the gateway is stopping) while a worker thread still had it."""


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
        # The worker threads' connection (checkpoints, retention, the outbox): one user at a time, and close() waits
        # for its user. Closed under a statement another thread runs, the sqlite3 module crashes the process (a
        # configuration reload that moves the ledger, say, while a checkpoint runs).
        self._checkpointer: sqlite3.Connection | None = None
        self._worker_lock = threading.Lock()
        self._closed = False
        self.unchecked = 0  # rows committed since the last checkpoint

    def write(self, row: dict) -> None:
        """Commits one row (and mirrors it); raises whatever stops it (a full disk, a locked file, bad text):
        the caller counts and reports failures."""
        self.write_many([row])

    def write_many(self, rows: list[dict]) -> None:
        """Commits rows in one transaction (and mirrors them); raises as write() does, committing none."""
        columns = self._columns
        values = [tuple(map(row.get, columns)) for row in rows]
        if len(values) == 1:
            self._db.execute(self._sql, values[0])  # autocommit: one transaction
        else:
            with self._db:
                self._db.execute("BEGIN")
                self._db.executemany(self._sql, values)
        self.unchecked += len(rows)
        if self._mirror is not None:
            self._mirror.write("".join(_compact(row) + "\n" for row in rows))

    @contextlib.contextmanager
    def _worker(self):
        """The worker threads' connection, theirs alone while the block runs. Raises ClosedLedger once closed."""
        with self._worker_lock:
            if self._closed:
                raise ClosedLedger(self.path)
            if self._checkpointer is None:
                self._checkpointer = connect(self.path)
            yield self._checkpointer

    def checkpoint(self, retention_s: float | None = None) -> int:
        """Deletes rows past the retention, then moves the WAL into the database (with fsync). Blocking: call
        from a worker thread. Returns the number of rows deleted (none once the ledger is closed)."""
        try:
            with self._worker() as db:
                self.unchecked = 0
                deleted = 0
                if retention_s is not None:
                    cutoff = time.time() - retention_s
                    deleted = db.execute("DELETE FROM calls WHERE started_at < ?", (cutoff,)).rowcount
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                return deleted
        except ClosedLedger:  # a reload moved the ledger meanwhile: the next one checkpoints the new file
            return 0

    # --- the outbox (blocking: call from a worker thread) ---------------------------------------------------------
    def unshipped(self, limit: int) -> list[tuple]:
        """Up to limit rows not yet in the shared ledger, oldest first: (rowid, *columns)."""
        quoted = ", ".join(f'"{c}"' for c in self._columns)
        with self._worker() as db:
            return db.execute(f"SELECT rowid, {quoted} FROM calls WHERE shipped = 0 ORDER BY rowid LIMIT ?",
                              (limit,)).fetchall()

    def mark_shipped(self, rowids: list[int]) -> None:
        with self._worker() as db:
            for start in range(0, len(rowids), 500):
                chunk = rowids[start:start + 500]
                db.execute(f"UPDATE calls SET shipped = 1 WHERE rowid IN ({', '.join('?' for _ in chunk)})", chunk)

    def backlog(self) -> int:
        with self._worker() as db:
            return db.execute("SELECT COUNT(*) FROM calls WHERE shipped = 0").fetchone()[0]

    def forget_shipped(self, older_than_s: float) -> int:
        """The outbox keeps shipped rows for a while (a local copy), then lets them go."""
        with self._worker() as db:
            return db.execute("DELETE FROM calls WHERE shipped = 1 AND started_at < ?",
                              (time.time() - older_than_s,)).rowcount

    def close(self) -> None:
        """Waits for a worker thread's statement to end (a checkpoint: milliseconds), then closes everything."""
        with self._worker_lock:
            self._closed = True
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error:
                pass
            self._db.close()
            if self._checkpointer is not None:
                self._checkpointer.close()
            if self._mirror is not None:
                self._mirror.close()


class _Segment:
    __slots__ = ("fd", "path", "size", "done")

    def __init__(self, fd: int, path: str):
        self.fd, self.path = fd, path
        self.size = 0  # whole rows only: a write cut short is taken back
        self.done = 0  # bytes committed to SQLite


class Journal:
    """This process's rows on their way into the SQLite ledger (used from one thread, the event loop): appended
    whole, one write() each, to files the process holds a lock on for its life (`<ledger>.journal-<pid>-<n>`; one nobody holds belongs to a process that
    died). JournalWriter commits what is new; a file is emptied once all of it is in, and one that grew past
    ROTATE_BYTES is followed by a new one and removed when all of it is in (so a busy gateway's journal stays small)."""

    ROTATE_BYTES = 1 << 20
    MEMORY_ROWS = 10_000  # rows also kept in memory until they are in, so a batch need not read and parse them back

    def __init__(self, db_path: str, mirror: str = ""):
        self._prefix = f"{db_path}.journal-{os.getpid()}-"
        self.mirror = mirror
        # ledger.jsonl: the same lines, line-buffered (one write() a row, no fsync); readers tail it.
        self._mirror = open(mirror, "a", buffering=1, encoding="utf-8") if mirror else None
        self._segments: list[_Segment] = []
        self._next = 0
        self._current = self._new_segment()
        # (segment, start, end, row) of the rows not yet in, in file order. Past MEMORY_ROWS (SQLite refusing rows
        # for a long while) it is dropped, and batches read the files until the journal is empty again.
        self._unread: collections.deque = collections.deque()
        self._spilled = False

    @property
    def path(self) -> str:
        return self._current.path

    def _new_segment(self) -> _Segment:
        while True:  # never a file that is there already: it may hold rows not yet in
            path = f"{self._prefix}{self._next}"
            self._next += 1
            try:
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX)
            segment = _Segment(fd, path)
            self._segments.append(segment)
            return segment

    def append(self, row: dict) -> None:
        """On disk when this returns (the OS has it; no fsync). Raises OSError: a full disk, say."""
        line = (_compact(row) + "\n").encode()
        segment = self._current
        try:
            written = os.write(segment.fd, line)
        except OSError:
            os.ftruncate(segment.fd, segment.size)
            raise
        if written != len(line):  # no half row may stay: the next one would not parse
            os.ftruncate(segment.fd, segment.size)
            raise OSError(errno.ENOSPC, "the ledger journal could not be written whole")
        if not self._spilled:
            if len(self._unread) < self.MEMORY_ROWS:
                self._unread.append((segment, segment.size, segment.size + written, row))
            else:
                self._unread.clear()
                self._spilled = True
        segment.size += written
        if self._mirror is not None:
            self._mirror.write(line.decode())
        if segment.size >= self.ROTATE_BYTES:
            try:
                self._current = self._new_segment()
            except OSError:  # the row is in; the next file is tried with the next row
                pass

    def pending(self, max_bytes: int) -> tuple[_Segment, list[dict], int]:
        """The oldest file with rows not yet in SQLite: those rows (whole lines, about max_bytes of them; at least
        one) and how many bytes of the file they take."""
        while len(self._segments) > 1 and self._segments[0].done >= self._segments[0].size:
            self._retire(self._segments.pop(0))
        segment = self._segments[0]
        size, done = segment.size, segment.done
        if size <= done:
            return segment, [], 0
        unread = self._unread
        if unread and unread[0][0] is segment and unread[0][1] == done:  # in memory: as appended
            rows, end = [], done
            for row_segment, _, row_end, row in unread:
                if row_segment is not segment or (rows and row_end - done > max_bytes):
                    break
                rows.append(row)
                end = row_end
            return segment, rows, end - done
        data = os.pread(segment.fd, min(size - done, max_bytes), done)
        end = data.rfind(b"\n")  # whole lines only (one row longer than the budget: read to its end)
        if end < 0:
            data = os.pread(segment.fd, size - done, done)
            end = data.index(b"\n")
        return segment, rows_of(data[:end + 1]), end + 1

    def empty(self) -> bool:
        return all(segment.done >= segment.size for segment in self._segments)

    def committed(self, segment: _Segment, n: int) -> None:
        segment.done += n
        unread = self._unread
        while unread and unread[0][0] is segment and unread[0][2] <= segment.done:
            unread.popleft()
        if segment.done < segment.size:
            return
        if self.empty():
            self._unread.clear()
            self._spilled = False  # memory holds every row again from the next one on
        if segment is self._current:  # all of it is in SQLite: start over (an empty journal means that)
            os.ftruncate(segment.fd, 0)
            segment.size = segment.done = 0
        else:
            self._segments.remove(segment)
            self._retire(segment)

    @staticmethod
    def _retire(segment: _Segment) -> None:
        os.close(segment.fd)
        try:
            os.unlink(segment.path)
        except OSError:
            pass

    def close(self) -> None:
        """Closes the files; those with rows not yet in stay for the next process to commit."""
        for segment in self._segments:
            if segment.done >= segment.size:
                self._retire(segment)
            else:
                os.close(segment.fd)
        self._segments = []
        if self._mirror is not None:
            self._mirror.close()


def rows_of(data: bytes) -> list[dict]:
    """The rows of journal text; a line that does not parse (a file damaged outside the gateway) is skipped."""
    rows = []
    for line in data.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            logging.getLogger("tollgate").error("tollgate: skipped a damaged line of the ledger journal")
            continue
        if isinstance(row, dict) and isinstance(row.get("id"), str):
            rows.append(row)
    return rows


def _printable(row: dict) -> dict:
    """Text SQLite takes (strings with lone surrogates, from bytes a client sent, get replacement characters)."""
    return {k: v.encode("utf-8", "replace").decode() if isinstance(v, str) else v for k, v in row.items()}


def commit_rows(db: "LedgerDB", rows: list[dict]) -> None:
    """Commits rows (re-committing one is harmless: rows are replaced by call id). A row SQLite refuses for its
    text goes in with that text repaired; anything else (a full disk, a locked file) raises, committing none."""
    try:
        db.write_many(rows)
    except (UnicodeError, sqlite3.InterfaceError, sqlite3.ProgrammingError):
        db.write_many([_printable(row) for row in rows])


def recover_journals(db: "LedgerDB") -> int:
    """Commits and removes the journals of processes that died before their rows were in. Returns rows recovered."""
    recovered = 0
    for path in glob.glob(glob.escape(db.path) + ".journal-*"):
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # its process is alive and commits its own
            os.close(fd)
            continue
        try:
            size = os.fstat(fd).st_size
            rows = rows_of(os.pread(fd, size, 0)) if size else []
            if rows:
                commit_rows(db, rows)
                recovered += len(rows)
            os.unlink(path)
        finally:
            os.close(fd)
    return recovered


class JournalCommitter:
    """Commits a journal to SQLite in batches, all that is new (up to MAX_BYTES) in one transaction. Its caller
    schedules it: the gateway runs it on its event loop every BATCH_SECONDS while rows wait (a writer thread
    contends with the event loop for the GIL, which measured slower than the commits themselves)."""

    BATCH_SECONDS = 0.1  # batches at most this often (rows reach readers within ~0.1 s; fewer transactions cost less)
    RETRY_SECONDS = 0.5
    MAX_BYTES = 64 * 1024  # a batch: ~100 rows, a few milliseconds (a backlog drains in such steps)

    def __init__(self, journal: Journal, db: "LedgerDB"):
        self.journal, self.db = journal, db

    def commit(self, max_bytes: int | None = None) -> bool:
        """Commits what is new, about max_bytes of it (None: all); True when nothing is left. Raises what stops
        SQLite (a full disk, a locked file): the rows stay in the journal."""
        left = max_bytes
        while True:
            segment, rows, n = self.journal.pending(self.MAX_BYTES if left is None else max(left, 1))
            if not n:
                return True
            if rows:  # (a damaged line parses to nothing: skipped)
                commit_rows(self.db, rows)
            self.journal.committed(segment, n)
            if left is not None:
                left -= n
                if left <= 0:
                    return self.journal.empty()
