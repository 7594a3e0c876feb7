"""Writes every call's record to the usage ledger, committed before the answer completes."""

from __future__ import annotations

import asyncio
import logging

from tollgate.core.ledger import LedgerDB
from tollgate.flows import record_of

log = logging.getLogger("tollgate")
CHECKPOINT_SECONDS = 1.0


class Ledger:
    def __init__(self, settings):
        self.settings = settings
        self.db: LedgerDB | None = None
        self._checkpoints: asyncio.Task | None = None

    def _ledger(self) -> LedgerDB:
        path = self.settings.config.ledger_path
        if self.db is None or self.db.path != path:
            old, self.db = self.db, LedgerDB(path)
            if old is not None:
                old.close()
            log.info("tollgate: usage ledger at %s", path)
        return self.db

    def running(self):  # sync on purpose (hot reload)
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
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            db = self.db
            if db is not None and db.unchecked:
                try:
                    await asyncio.to_thread(db.checkpoint)
                except Exception as e:  # a busy or failing disk must not end the loop
                    log.warning("tollgate: ledger checkpoint failed: %s", e)

    def response(self, flow):
        record = record_of(flow)
        if record is None or record.written:
            return
        record.written = True
        self._ledger().write(record.row())

    def error(self, flow):
        self.response(flow)
