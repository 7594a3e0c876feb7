"""Writes every call's record to the usage ledger; the answer completes only after its row is committed."""

from __future__ import annotations

import logging

from tollgate.core.ledger import LedgerWriter
from tollgate.flows import record_of

log = logging.getLogger("tollgate")


class Ledger:
    def __init__(self, settings):
        self.settings = settings
        self.writer: LedgerWriter | None = None

    def _writer(self) -> LedgerWriter:
        path = self.settings.config.ledger_path
        if self.writer is None or self.writer.path != path:
            old, self.writer = self.writer, LedgerWriter(path)
            if old is not None:
                old.close()
            log.info("tollgate: usage ledger at %s", path)
        return self.writer

    def running(self):
        self._writer()

    def done(self):
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    async def response(self, flow):
        record = record_of(flow)
        if record is None or record.written:
            return
        record.written = True
        await self._writer().write(record.row())

    async def error(self, flow):
        await self.response(flow)
