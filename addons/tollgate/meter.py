"""Settles each call's numbers once it ends: status, latency, time to first token, and tokens as the provider
reported them, or counted from the prompt and the streamed text when it did not (a stream cut short)."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from tollgate.core import tokens
from tollgate.core.dialects import Usage, usage_from_body
from tollgate.core.record import Decision
from tollgate.flows import content_of, header, record_of

log = logging.getLogger("tollgate")


class Meter:
    always = True  # bookkeeping: runs even after another step failed

    def __init__(self, settings):
        self.settings = settings
        self._preload: asyncio.Future | None = None

    def running(self):
        if self._preload is None:  # building the token tables takes a second of CPU: not on the event loop
            self._preload = asyncio.get_running_loop().run_in_executor(None, tokens.preload)
            self._preload.add_done_callback(lambda _: log.info("tollgate: token counting ready"))

    def response(self, flow):
        """The one place a call's numbers are set: forwarded calls and cache hits alike (a refusal has none)."""
        record = record_of(flow)
        if record is None or (record.answered_here and record.stored_usage is None):
            return
        self._response(flow, record)
        self._price(record)

    def _price(self, record) -> None:
        if not (record.prompt_tokens or record.completion_tokens):
            return
        priced = self.settings.config.priced(record.provider, record.model or record.requested_model,
                                             record.prompt_tokens, record.completion_tokens, record.cached_tokens,
                                             record.cache_write_tokens, record.started_at)
        record.priced_by = priced.by
        if record.stored_usage is not None:  # a cache hit spends nothing: what it would have cost is saved
            record.saved_usd = round(priced.usd, 8)
        else:
            record.cost_usd = round(priced.usd, 8)

    def _response(self, flow, record) -> None:
        record.status = flow.response.status_code
        end = flow.response.timestamp_end or time.time()
        record.latency_ms = round((end - record.started_at) * 1000, 2)
        if record.stored_usage is not None:
            record.ttft_ms = record.latency_ms
            record.prompt_tokens, record.completion_tokens = (record.stored_usage.prompt_tokens,
                                                              record.stored_usage.completion_tokens)
            record.usage_source = "cache"
        elif record.tap is not None:
            self._settle_stream(record, finished=True)
        else:
            record.ttft_ms = record.latency_ms
            self._settle(record, _usage_of(record.dialect, flow.response), "", finished=True)

    def error(self, flow):
        record = record_of(flow)
        if record is None or record.answered_here:
            return
        record.latency_ms = round((time.time() - record.started_at) * 1000, 2)
        message = flow.error.msg if flow.error else ""
        if flow.response is not None and record.status < 400:
            record.status = flow.response.status_code
        # A stream whose final event came is a complete call, whoever closed the connection afterwards.
        finished = record.tap is not None and record.tap.meter.finished
        if record.decision in (Decision.UPSTREAM_TIMEOUT, Decision.GATEWAY_ERROR) or finished:
            pass  # the reason is set already, or there is nothing to say
        elif record.decision not in (Decision.FORWARDED, Decision.BYOK):  # e.g. a recorded unapproved host
            record.reason = f"{record.reason}; failed: {message}"
        elif "client" in message.lower():
            record.decision, record.reason = Decision.CLIENT_ABORTED, message
        else:  # the gateway answers this one itself (see forward.py), so the ledger says what the client got
            record.decision = Decision.UPSTREAM_ERROR
            record.reason = f"cannot reach provider {record.provider}: {message}"
            record.status = record.status or 502
        if record.tap is not None:
            self._settle_stream(record, finished=finished)
        self._price(record)

    def _settle_stream(self, record, finished: bool) -> None:
        tap = record.tap
        if tap.first_token_at is not None:
            record.ttft_ms = round((tap.first_token_at - record.started_at) * 1000, 2)
        self._settle(record, tap.meter.usage, tap.meter.streamed_text, finished)

    @staticmethod
    def _settle(record, usage: Usage | None, streamed_text: str, finished: bool) -> None:
        """Usage the provider reported for a finished answer wins; whatever is missing (a stream cut short, a
        provider that reports nothing) is counted with tiktoken."""
        if finished and usage is not None:
            record.prompt_tokens, record.completion_tokens = usage.prompt_tokens, usage.completion_tokens
            record.cached_tokens = usage.cached_tokens
            record.cache_write_tokens = usage.cache_write_tokens
            record.usage_source = "provider"
            return
        if record.status and record.status >= 400 and not streamed_text:
            record.usage_source = "none"  # a refused call: no tokens
            return
        model = record.model or record.requested_model
        record.prompt_tokens = usage.prompt_tokens if usage and usage.prompt_tokens else tokens.estimate_prompt(
            model, record.body)
        record.completion_tokens = max(usage.completion_tokens if usage else 0,
                                       tokens.count_text(model, streamed_text))
        record.cached_tokens = usage.cached_tokens if usage else 0
        record.cache_write_tokens = usage.cache_write_tokens if usage else 0
        record.usage_source = "estimate"


def _usage_of(dialect: str, response) -> Usage | None:
    if "json" not in header(response.headers, "content-type", ""):
        return None
    try:
        body = json.loads(content_of(response) or b"null")
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(body, list):  # Gemini's streamGenerateContent without alt=sse: an array of chunks
        body = next((c for c in reversed(body) if isinstance(c, dict) and "usageMetadata" in c), None)
    return usage_from_body(dialect, body) if isinstance(body, dict) else None
