"""The usage ledger: one SQLite row per call, written by one thread with group commits.

`write(row)` returns an asyncio future that resolves once the row is committed, so a response can wait for its row
without blocking the event loop. WAL with synchronous=NORMAL: a committed row survives the gateway being killed.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from pathlib import Path

from .record import stored_columns

log = logging.getLogger(__name__)

_TYPES = {"started_at": "REAL NOT NULL", "latency_ms": "REAL", "ttft_ms": "REAL", "streamed": "INTEGER",
          "status": "INTEGER", "prompt_tokens": "INTEGER", "completion_tokens": "INTEGER", "cached_tokens": "INTEGER"}
_STOP = object()


def open_db(path: str) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    columns = ", ".join(f'"{c}" {_TYPES.get(c, "TEXT")}' for c in stored_columns() if c != "id")
    db.execute(f"CREATE TABLE IF NOT EXISTS calls (id TEXT PRIMARY KEY, {columns})")
    have = {row[1] for row in db.execute("PRAGMA table_info(calls)")}
    for column in stored_columns():  # a ledger written by an older version gains the new columns
        if column not in have:
            kind = _TYPES.get(column, "TEXT").replace(" NOT NULL", "")
            db.execute(f'ALTER TABLE calls ADD COLUMN "{column}" {kind}')
    db.execute("CREATE INDEX IF NOT EXISTS calls_started ON calls (started_at)")
    db.commit()
    return db


class LedgerWriter:
    def __init__(self, path: str, max_pending: int = 100_000):
        self.path = path
        self._db = open_db(path)
        self._queue: queue.Queue = queue.Queue(max_pending)
        self._columns = stored_columns()
        quoted = ", ".join(f'"{c}"' for c in self._columns)  # "group" is an SQL keyword
        self._sql = (f"INSERT OR REPLACE INTO calls ({quoted}) "
                     f"VALUES ({', '.join('?' for _ in self._columns)})")
        self._thread = threading.Thread(target=self._run, name=f"ledger:{path}", daemon=True)
        self._thread.start()

    def write(self, row: dict) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        try:
            self._queue.put_nowait((row, loop, done))
        except queue.Full:
            log.error("ledger backlog full (%d rows): dropping call %s", self._queue.maxsize, row.get("id"))
            done.set_result(False)
        return done

    def close(self) -> None:
        self._queue.put((_STOP, None, None))
        self._thread.join(timeout=10)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < 500:  # group commit: whatever queued up while the last commit ran
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            rows = [item for item in batch if item[0] is not _STOP]
            stopping = len(rows) < len(batch)
            ok = self._commit([row for row, _, _ in rows])
            for _, loop, done in rows:
                loop.call_soon_threadsafe(_resolve, done, ok)
        self._db.close()

    def _commit(self, rows: list[dict]) -> bool:
        if not rows:
            return True
        try:
            with self._db:
                self._db.executemany(self._sql, [tuple(row[c] for c in self._columns) for row in rows])
            return True
        except sqlite3.Error as e:
            log.error("ledger write failed for %d call(s): %s", len(rows), e)
            return False


def _resolve(future: asyncio.Future, ok: bool) -> None:
    if not future.done():
        future.set_result(ok)
