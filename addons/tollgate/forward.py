"""The last step before a request leaves, and the watch over the provider while it answers.

Before: the edited body is serialised once and an uncompressed answer is asked for (the stream tap reads SSE
bytes as they come). While the call is out: no answer headers within gateway.upstream_timeout → 504; then silence
in the middle of the answer for gateway.upstream_idle_timeout → the answer ends (504 if nothing reached the client
yet, a final error event ending a stream otherwise). A plain answer's body counts as silence until it is complete:
providers send it at once. Errors mitmproxy answers itself (provider unreachable, cut off) reach LLM clients in
their provider's shape, for HTTP/1 and HTTP/2 (see internals.py)."""

from __future__ import annotations

import asyncio
import json
import time

from tollgate import internals
from tollgate.core import wire
from tollgate.core.dialects import error_body, error_event
from tollgate.core.record import Decision
from tollgate.flows import pending, record_of, reject, set_headers

_compact = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # made once, not per call


def upstream_content(record) -> bytes:
    """The request body as the provider gets it: in its own wire format (translated if need be), UTF-8 JSON.
    Raises wire.TranslationError when the client's request has no counterpart there."""
    body = record.body
    if record.upstream_dialect and record.upstream_dialect != record.dialect:
        body, dropped = wire.translate_request(body, record.dialect, record.upstream_dialect, record.model)
        record.dropped = ",".join(dropped)
    return _compact(body).encode()


ERROR_CODES = {413: "request_too_large", 502: "upstream_error", 504: "upstream_timeout"}


class Forward:
    always = True  # bookkeeping: runs even after another step failed

    def __init__(self, settings):
        self.settings = settings
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def load(self, loader):
        internals.error_answer = self._error_answer
        internals.stream_end = self._stream_end

    def done(self):
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    @staticmethod
    def _error_answer(flow, status: int, message: str):
        record = record_of(flow)
        if record is None:
            return None
        # The error hook (Meter) has settled status and reason already; the client gets what the ledger says.
        status = record.status if record.status >= 400 else status
        message = record.reason or f"provider {record.provider} failed: {message}"
        code = ERROR_CODES.get(status) if record.decision != Decision.UPSTREAM_TIMEOUT else "upstream_timeout"
        return status, {"content-type": "application/json"}, error_body(record.dialect, status, message, code)

    @staticmethod
    def _stream_end(flow, message: str) -> bytes:
        record = record_of(flow)
        if record is None or record.tap is None:
            return b""
        status = record.status if record.status >= 500 else 502
        return error_event(record.dialect, status, record.reason or message, record.decision)

    def request(self, flow):
        if not (record := pending(flow)):
            return
        changed = {"accept-encoding": "identity"}
        if record.body_changed:  # UTF-8 JSON whatever the client's Content-Type said (text/plain means latin-1)
            try:
                flow.request.content = upstream_content(record)
            except wire.TranslationError as e:
                return reject(flow, record, 400, f"cannot translate this call for provider {record.provider}: {e}",
                              code="untranslatable_request")
            changed["content-type"] = "application/json"
        set_headers(flow.request.headers, changed)
        self._arm(flow, self.settings.config.upstream_timeout_s, self._no_headers)

    def responseheaders(self, flow):
        self._disarm(flow)
        record = record_of(flow)
        if record is not None and not record.untouched and not flow.error:
            self._arm(flow, self.settings.config.upstream_idle_timeout_s, self._idle)

    def response(self, flow):
        self._disarm(flow)

    def error(self, flow):
        self._disarm(flow)

    def _arm(self, flow, seconds: float, check) -> None:
        self._disarm(flow)
        self._timers[flow.id] = asyncio.get_running_loop().call_later(seconds, check, flow)

    def _disarm(self, flow) -> None:
        if timer := self._timers.pop(flow.id, None):
            timer.cancel()

    def _no_headers(self, flow) -> None:
        self._timers.pop(flow.id, None)
        record = record_of(flow)
        if record is None or flow.response or flow.error:
            return
        record.decision, record.status = Decision.UPSTREAM_TIMEOUT, 504
        record.reason = f"provider {record.provider} did not answer within " \
                        f"{self.settings.config.upstream_timeout_s:g} s"
        internals.close_upstream(flow)  # mitmproxy fails the flow; the client gets the 504 in its provider's shape

    def _idle(self, flow) -> None:
        """Fires after idle_timeout: ends the answer if nothing came since, else waits for the rest of the time."""
        self._timers.pop(flow.id, None)
        record = record_of(flow)
        if record is None or flow.error or not flow.live:
            return
        idle = self.settings.config.upstream_idle_timeout_s
        last = record.tap.last_chunk_at if record.tap is not None else None
        if last is not None and (quiet := time.time() - last) < idle:
            self._arm(flow, idle - quiet, self._idle)
            return
        record.decision = Decision.UPSTREAM_TIMEOUT
        if record.tap is None:  # a plain answer: nothing reached the client yet
            record.status = 504
        record.reason = f"provider {record.provider} went silent for {idle:g} s in the middle of its answer"
        internals.close_upstream(flow)
