"""Writes every call's record to the usage ledger: on disk before the answer completes (the process's journal), in
SQLite within milliseconds, in batches on the event loop (core/ledger.py: Journal, JournalCommitter).

A row that cannot be written (full disk, locked or broken file) is never lost silently: it is counted in
tollgate_ledger_errors_total, the outage is logged once when it starts and once when it ends, /healthz answers 503
meanwhile, and with ledger.on_error: closed new LLM calls are refused (503) until rows can be written again."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import time

from tollgate.core import ledger_pg
from tollgate.core.ledger import ClosedLedger, Journal, JournalCommitter, LedgerDB, recover_journals
from tollgate.core.record import METADATA_KEY, Decision
from tollgate.flows import pending, record_of, reject
from tollgate.metrics import LEDGER_BACKLOG, LEDGER_ERRORS, health

UNAVAILABLE = "the gateway cannot record calls right now (usage ledger unavailable); retry shortly"

log = logging.getLogger("tollgate")
CHECKPOINT_SECONDS = 1.0
PRUNE_SECONDS = 60.0  # retention is enforced at most once a minute
SHIP_SECONDS = 0.5    # rows reach the shared ledger within about this (plus a batch's time)
SHIP_BATCH = 500
PG_TIMEOUT = 15.0     # one batch (or the schema) in PostgreSQL; longer counts as an outage


class Ledger:
    always = True  # bookkeeping: runs even after another step failed

    def __init__(self, settings):
        self.settings = settings
        self.db: LedgerDB | None = None
        self.journal: Journal | None = None
        self.committer: JournalCommitter | None = None
        self._commit_at: asyncio.TimerHandle | None = None
        self._committed_at = float("-inf")  # time.monotonic() of the last batch
        self._checkpoints: asyncio.Task | None = None
        self._shipper: Shipper | None = None

    def _ledger(self) -> LedgerDB:
        config = self.settings.config
        outbox = bool(config.ledger_url)
        if self.journal is None or (self.db.path, self.journal.mirror, self.db.outbox) != (
                config.ledger_path, config.ledger_jsonl, outbox):  # (a half-made ledger is made again)
            path = config.ledger_path
            self._close()
            self.db = LedgerDB(path, outbox=outbox)
            if recovered := recover_journals(self.db):
                log.warning("tollgate: %d calls of a gateway process that ended abruptly were put in the ledger",
                            recovered)
            self.journal = Journal(path, config.ledger_jsonl)  # the JSONL mirror is written as rows come
            self.committer = JournalCommitter(self.journal, self.db)
            log.info("tollgate: usage ledger at %s", path)
        return self.db

    def _close(self) -> None:
        """The last rows go in, then the files close (a journal with rows SQLite did not take stays for the next
        start)."""
        if self._commit_at is not None:
            self._commit_at.cancel()
            self._commit_at = None
        if self.committer is not None:
            try:
                self.committer.commit()
            except Exception as e:
                log.error("tollgate: the usage ledger cannot be written (%s: %s); rows wait in the journal beside "
                          "it for the next start", type(e).__name__, e)
        if self.journal is not None:
            self.journal.close()
        if self.db is not None:
            self.db.close()
        self.db = self.journal = self.committer = None

    def running(self):  # sync on purpose (hot reload)
        if self.settings.config is None:  # a bad configuration at start: mitmproxy is exiting
            return
        self._ledger()
        if self._checkpoints is None:
            self._checkpoints = asyncio.get_running_loop().create_task(self._checkpoint_loop())
        if self._shipper is None:
            self._shipper = Shipper(self)
            self._shipper.start()

    def done(self):
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            self._checkpoints = None
        if self._shipper is not None:
            self._shipper.stop()
            self._shipper = None
        self._close()

    async def _checkpoint_loop(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            db, retention = self.db, self.settings.config.ledger_retention_s
            prune = retention is not None and time.monotonic() - last_prune >= PRUNE_SECONDS
            if db is not None and (db.unchecked or prune):
                try:
                    if prune and self.settings.config.ledger_url:  # the shared ledger keeps them; so did we, a while
                        await asyncio.to_thread(db.forget_shipped, self.settings.config.ledger_local_retention_s)
                        retention = None  # the shared ledger's retention is the shipper's
                    deleted = await asyncio.to_thread(db.checkpoint, retention if prune else None)
                except Exception as e:  # a busy or failing disk must not end the loop
                    log.warning("tollgate: ledger checkpoint failed: %s", e)
                    continue
                if prune:
                    last_prune = time.monotonic()
                    if deleted:
                        log.info("tollgate: ledger retention removed %d calls", deleted)

    def response(self, flow):
        record = record_of(flow)
        if record is None or record.written or record.session_open:
            return
        record.written = True
        row = record.row()
        flow.metadata[METADATA_KEY] = row.copy()  # plain values: flow dumps and mitmweb saves keep it (a copy: the
        if self.write(row):                       # journal holds the row until it is in)
            return
        response = flow.response
        if self.settings.config.ledger_on_error == "closed" and response is not None and not response.stream:
            # This answer cannot be accounted for: under `closed` it is not released either (a stream under way is
            # past holding back). The next calls are refused by LedgerAdmission until rows land again.
            _refuse(flow, record)

    def write(self, row: dict) -> bool:
        """One row (a call's, or one the gateway made on a call's behalf: its embeddings): in the journal now,
        in SQLite with the next batch. False when it could not be written (reported and counted)."""
        try:
            self._ledger()
            self.journal.append(row)
        except Exception as e:
            self._failed(e)
            return False
        self._commit_later(JournalCommitter.BATCH_SECONDS)
        return True

    def _commit_later(self, spacing: float) -> None:
        """The next batch, `spacing` after the last one: a quiet gateway's row goes in at once (and a failing disk
        shows at once), a busy one's rows go in together."""
        if self._commit_at is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (a script): commit now
                self._commit()
                return
            self._commit_at = loop.call_later(max(0.0, self._committed_at + spacing - time.monotonic()), self._commit)

    def _commit(self) -> None:
        self._commit_at = None
        self._committed_at = time.monotonic()
        if self.committer is None:
            return
        try:
            done = self.committer.commit(JournalCommitter.MAX_BYTES)
        except Exception as e:
            self._failed(e, queued=True)
            self._commit_later(JournalCommitter.RETRY_SECONDS)
            return
        if not health.ledger_ok:
            log.warning("tollgate: the usage ledger is writable again")
            health.ledger_ok = True
        if not done:  # a backlog: the next batch after whatever else waits on the loop
            self._commit_later(0)

    def _failed(self, e: Exception, queued: bool = False) -> None:
        """queued: the rows are in the journal, on disk, and go in when SQLite takes them again."""
        LEDGER_ERRORS.inc()
        if health.ledger_ok:
            fate = f"rows wait in {self.journal.path}" if queued and self.journal else "calls go unrecorded"
            log.error("tollgate: the usage ledger cannot be written (%s: %s); %s until it can (ledger.on_error: %s)",
                      type(e).__name__, e, fate, self.settings.config.ledger_on_error)
        health.ledger_ok = False

    def error(self, flow):
        self.response(flow)

    def websocket_end(self, flow):  # a WebSocket session's row, once it ends
        self.response(flow)


class LedgerAdmission:
    """ledger.on_error: closed — while rows cannot be written, new LLM calls are refused rather than served
    unrecorded. (Their refusal is tried on the ledger too: the first row that lands ends the outage.)"""

    def __init__(self, settings):
        self.settings = settings

    def request(self, flow):
        if health.ledger_ok or self.settings.config.ledger_on_error != "closed" or not (record := pending(flow)):
            return
        _refuse(flow, record)


def _refuse(flow, record) -> None:
    reject(flow, record, 503, UNAVAILABLE, decision=Decision.UNAVAILABLE, code="ledger_unavailable",
           headers={"retry-after": "5"})


class Shipper:
    """Ships the SQLite outbox to the shared ledger in PostgreSQL (ledger.url), in batches upserted by call id.

    An outage never slows a call: the rows wait in the local file (on disk, never in memory: batches of 500),
    tollgate_ledger_backlog_rows shows how many, and they drain when PostgreSQL is back. Processes that share one
    SQLite file (scripts/run --workers) ship it one at a time (a file lock; another takes over if the holder dies)."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self._task: asyncio.Task | None = None
        self._conn = None
        self._lock_file = None
        self._down = False
        self._last_retention = 0.0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._lock_file is not None:
            self._lock_file.close()

    async def _run(self) -> None:
        wait = SHIP_SECONDS
        while True:
            await asyncio.sleep(wait)
            config, db = self.ledger.settings.config, self.ledger.db
            if not config.ledger_url or db is None or not self._holds_lock(db.path):
                wait = SHIP_SECONDS * 4
                continue
            try:
                shipped = await asyncio.wait_for(self._ship(db, config), PG_TIMEOUT)
                wait = 0 if shipped == SHIP_BATCH else SHIP_SECONDS  # a backlog drains without pause
                if self._down:
                    log.warning("tollgate: the shared ledger is reachable again; draining the backlog")
                    self._down = False
            except asyncio.CancelledError:
                raise
            except ClosedLedger:  # a reload moved the ledger meanwhile: the next turn ships from the new one (rows
                wait = 0          # sent but not marked go again: the shared ledger upserts them by call id)
                continue
            except Exception as e:
                if not self._down:
                    log.error("tollgate: the shared ledger (%s) is unavailable (%s: %s); rows wait in %s and are "
                              "shipped when it is back", ledger_pg.redacted(config.ledger_url), type(e).__name__,
                              str(e).split("\n")[0], db.path)
                self._down = True
                await self._close()
                wait = min(max(wait, SHIP_SECONDS) * 2, 5.0)
            try:
                LEDGER_BACKLOG.set(await asyncio.to_thread(db.backlog))
            except Exception:
                pass

    async def _ship(self, db: LedgerDB, config) -> int:
        conn = await self._connection(config.ledger_url)
        rows = await asyncio.to_thread(db.unshipped, SHIP_BATCH)
        if rows:
            sql, _ = ledger_pg.upsert_sql()
            async with conn.transaction():
                async with conn.cursor() as cursor:
                    await cursor.executemany(sql, [row[1:] for row in rows])
            await asyncio.to_thread(db.mark_shipped, [row[0] for row in rows])
        if config.ledger_retention_s is not None and time.monotonic() - self._last_retention >= PRUNE_SECONDS:
            async with conn.transaction():
                if (await (await conn.execute(ledger_pg.RETENTION_LOCK_SQL)).fetchone())[0]:
                    await conn.execute(ledger_pg.RETENTION_SQL, (time.time() - config.ledger_retention_s,))
            self._last_retention = time.monotonic()
        return len(rows)

    async def _connection(self, url: str):
        import psycopg

        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = await psycopg.AsyncConnection.connect(url, connect_timeout=5,
                                                           options="-c statement_timeout=10000")
        async with self._conn.transaction():
            for statement in ledger_pg.schema_sql():
                await self._conn.execute(statement)
        log.info("tollgate: shipping the ledger to %s", ledger_pg.redacted(url))
        return self._conn

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await asyncio.wait_for(conn.close(), 2)
            except Exception:
                pass

    def _holds_lock(self, path: str) -> bool:
        if self._lock_file is not None:
            return True
        handle = open(path + ".ship-lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self._lock_file = handle
        return True
