"""Writes every call's record to the usage ledger, committed before the answer completes.

A row that cannot be written (full disk, locked or broken file) is never lost silently: it is counted in
tollgate_ledger_errors_total, the outage is logged once when it starts and once when it ends, /healthz answers 503
meanwhile, and with ledger.on_error: closed new LLM calls are refused (503) until rows can be written again."""

from __future__ import annotations

import asyncio
import logging
import time

from tollgate.core.ledger import LedgerDB
from tollgate.core.record import Decision
from tollgate.flows import pending, record_of, reject
from tollgate.metrics import LEDGER_ERRORS, health

log = logging.getLogger("tollgate")
CHECKPOINT_SECONDS = 1.0
PRUNE_SECONDS = 60.0  # retention is enforced at most once a minute


class Ledger:
    always = True  # bookkeeping: runs even after another step failed

    def __init__(self, settings):
        self.settings = settings
        self.db: LedgerDB | None = None
        self._checkpoints: asyncio.Task | None = None

    def _ledger(self) -> LedgerDB:
        config = self.settings.config
        if self.db is None or (self.db.path, self.db.jsonl) != (config.ledger_path, config.ledger_jsonl):
            path = config.ledger_path
            old, self.db = self.db, LedgerDB(path, config.ledger_jsonl)
            if old is not None:
                old.close()
            log.info("tollgate: usage ledger at %s", path)
        return self.db

    def running(self):  # sync on purpose (hot reload)
        if self.settings.config is None:  # a bad configuration at start: mitmproxy is exiting
            return
        self._ledger()
        if self._checkpoints is None:
            self._checkpoints = asyncio.get_running_loop().create_task(self._checkpoint_loop())

    def done(self):
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            self._checkpoints = None
        if self.db is not None:
            self.db.close()
            self.db = None

    async def _checkpoint_loop(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            db, retention = self.db, self.settings.config.ledger_retention_s
            prune = retention is not None and time.monotonic() - last_prune >= PRUNE_SECONDS
            if db is not None and (db.unchecked or prune):
                try:
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
        try:
            self._ledger().write(record.row())
        except Exception as e:
            LEDGER_ERRORS.inc()
            if health.ledger_ok:
                log.error("tollgate: the usage ledger cannot be written (%s: %s); calls go unrecorded until it can "
                          "(ledger.on_error: %s)", type(e).__name__, e, self.settings.config.ledger_on_error)
            health.ledger_ok = False
            return
        if not health.ledger_ok:
            log.warning("tollgate: the usage ledger is writable again")
            health.ledger_ok = True

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
        reject(flow, record, 503, "the gateway cannot record calls right now (usage ledger unavailable); "
                                  "retry shortly", decision=Decision.UNAVAILABLE, code="ledger_unavailable",
               headers={"retry-after": "5"})
