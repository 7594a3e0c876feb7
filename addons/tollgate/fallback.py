"""Fallback within a call: when the target failed before any byte of its answer reached the client (it could not be
reached, did not answer in time, or answered a status in retry.on), the same call goes to the pool's next healthy
target (another provider, or the same one with its next key), translated if that target speaks another format.

The first attempt is mitmproxy's own connection; the next ones are sent by the gateway (httpx), their answer read
whole, then handed to the same steps a first answer meets (stream tap, restoring, moderation, metering, cache,
ledger), so a fallback answer is checked exactly like any other. A stream that falls back therefore arrives in one
piece once the fallback target finished (its events unchanged). Never after answer bytes reached the client; at
most retry.max_attempts per call; retries within retry.budget of the last minute's calls."""

from __future__ import annotations

import asyncio
import logging

import httpx
from mitmproxy import flow as mflow
from mitmproxy import http

from tollgate import internals
from tollgate.core import wire
from tollgate.core.record import Decision
from tollgate.flows import record_of
from tollgate.forward import upstream_content

log = logging.getLogger("tollgate")
MAX_ANSWER_BYTES = 64 * 2**20   # a fallback answer is read whole: bounded
KEY_TROUBLE = (401, 403, 429)  # the org key's own: the same provider's next key may answer
HOP_HEADERS = (b"connection", b"keep-alive", b"transfer-encoding", b"content-length", b"host", b"proxy-connection",
               b"upgrade", b"te")


class Fallback:
    def __init__(self, settings, route, health, calls):
        self.settings = settings
        self.route = route
        self.health = health
        self.calls = calls  # own_calls.OwnCalls: its HTTP client trusts what mitmproxy's upstream connections trust

    def wants(self, flow) -> bool:
        """Did the attempt fail in a way another target may mend? (cheap: called on every answer)"""
        record = record_of(flow)
        if record is None or not record.attempts or record.tap is not None:
            return False
        if record.attempts >= self.settings.config.retry.max_attempts:
            return False
        if flow.error is not None:
            return bool(record.routes) and not record.answered_here and "client" not in flow.error.msg.lower()
        response = flow.response
        if response is None or response.stream or record.answered_here:
            return False
        status = response.status_code
        return (bool(record.routes) and status in self.settings.config.retry.on) or (
            status in KEY_TROUBLE and record.key_id != "" and len(record.target.provider.keys) > 1)

    async def retry(self, flow) -> None:
        """Tries the next targets until one answers: flow.response then holds its answer (complete) and flow.error
        is cleared; otherwise the last failure stands (the last status a provider answered, or the error)."""
        record = record_of(flow)
        config = self.settings.config
        while True:
            self._failed(flow, record)
            if record.attempts >= config.retry.max_attempts or not record.routes or not self.health.may_retry():
                return
            if not self.route.next(flow, record):
                return
            try:
                content = upstream_content(record)
            except wire.TranslationError as e:
                record.failed_targets = _add(record.failed_targets, f"{record.provider}:untranslatable ({e})")
                continue
            flow.request.content = content
            flow.request.headers["content-type"] = "application/json"
            answer = await self._send(flow, record, content)
            if answer is None:
                continue  # record.reason says why; the loop records it as the next failure
            flow.response, flow.error = answer, None
            record.decision, record.status, record.reason = Decision.FORWARDED, 0, ""
            if answer.status_code not in config.retry.on and answer.status_code not in KEY_TROUBLE:
                return

    def _failed(self, flow, record) -> None:
        """The attempt that just failed: its target named in the ledger, its outcome given to health."""
        answered = flow.response is not None and flow.error is None
        status = flow.response.status_code if answered else None
        what = str(status) if answered else ("timeout" if record.decision == Decision.UPSTREAM_TIMEOUT else "unreachable")
        key = f"/{record.key_id}" if record.key_id else ""
        record.failed_targets = _add(record.failed_targets, f"{record.provider}{key}:{what}")
        self.health.outcome(record, status, flow.response.headers.get("retry-after", "") if answered else "")
        self.health.finished(flow)
        if status in KEY_TROUBLE and record.key_id and len(record.target.provider.keys) > 1:
            record.routes.insert(0, record.target)  # its next key (Route skips the keys that are out or cooling)

    async def _send(self, flow, record, content: bytes) -> http.Response | None:
        config = self.settings.config
        request = flow.request
        headers = [(k, v) for k, v in internals.wire_headers(request) if k.lower() not in HOP_HEADERS]
        client = self.calls.http()
        timeout = httpx.Timeout(config.upstream_timeout_s, read=config.upstream_idle_timeout_s)
        try:
            async with asyncio.timeout(config.upstream_timeout_s):  # the answer's head, as for the first attempt
                upstream = await client.send(client.build_request(request.method, request.url, headers=headers,
                                                                  content=content, timeout=timeout), stream=True)
            try:
                body = bytearray()
                async for chunk in upstream.aiter_raw():  # the read timeout is the idle timeout
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise ValueError(f"answer larger than {MAX_ANSWER_BYTES} bytes")
            finally:
                await upstream.aclose()
        except (httpx.HTTPError, OSError, TimeoutError, ValueError) as e:
            timed_out = isinstance(e, (TimeoutError, httpx.TimeoutException))
            record.decision = Decision.UPSTREAM_TIMEOUT if timed_out else Decision.UPSTREAM_ERROR
            record.reason = f"provider {record.provider} failed: {type(e).__name__}"
            flow.error = flow.error or mflow.Error(record.reason)
            flow.response = None if flow.error else flow.response
            return None
        fields = [(k, v) for k, v in upstream.headers.raw if k.lower() not in HOP_HEADERS]
        response = http.Response.make(upstream.status_code, b"", fields)
        response.raw_content = bytes(body)  # as it came (a compressed answer stays compressed, as mitmproxy's would)
        response.headers["content-length"] = str(len(body))
        return response



def _add(listed: str, item: str) -> str:
    return f"{listed}, {item}" if listed else item
