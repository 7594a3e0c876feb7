"""The gate itself: one mitmproxy addon that runs tollgate's steps in order, for every hook, inside one guard.

mitmproxy skips the remaining addons of a hook when one raises and lets the flow carry on, so a gateway made of
separate addons fails open. Here the steps are plain objects and this addon calls them, so by construction:
- request phase: the first exception stops the pipeline and the client gets a 500 `gateway_error` in its
  provider's shape; nothing goes upstream.
- response phase: an exception replaces an answer not yet sent by that 500 (a stream already under way is ended
  by its tap); the bookkeeping steps (`always = True`: metering, limits settlement, annotations, metrics, ledger)
  still run, each in its own guard, so the call still gets its ledger row.
Every failure logs one traceback (never the exception's message: it may quote request text), is recorded as
decision `gateway_error` with the exception's type, and counts in tollgate_gateway_errors_total{stage}.
It is also cheaper: mitmproxy dispatches one addon per hook instead of twenty."""

from __future__ import annotations

import inspect
import logging
import time
import traceback

from mitmproxy import http

from tollgate import internals
from tollgate.core.dialects import OPENAI, dialect_of_path, error_body
from tollgate.core.record import CallRecord, Decision
from tollgate.flows import open_record, record_of, reject, set_headers, strip_credentials
from tollgate.metrics import GATEWAY_ERRORS

log = logging.getLogger("tollgate")
GUARDED = ("http_connect", "requestheaders", "request", "responseheaders", "response", "error", "websocket_message",
           "websocket_end")
GATEWAY_ERROR_MESSAGE = "the gateway failed while handling this call (gateway_error); it was not sent to the provider"


class _Withhold:
    """Stream callable of an answer the gateway will not pass on: swallows the upstream body, ends with ours."""

    def __init__(self, body: bytes):
        self.body = body

    def __call__(self, chunk: bytes) -> list[bytes]:
        return [] if chunk else [self.body]


def failure_record(flow) -> CallRecord:
    """The flow's record, or a fresh one when the failure came before classification opened it."""
    record = record_of(flow)
    if record is None:
        path = flow.request.path.split("?", 1)[0] if flow.request else ""
        try:
            dialect = dialect_of_path(path)
        except Exception:
            dialect = OPENAI
        peer = flow.client_conn.peername
        record = CallRecord(id=flow.id, started_at=(flow.request.timestamp_start if flow.request else 0) or time.time(),
                            client_ip=peer[0] if peer else "", dialect=dialect, endpoint=path[:500])
        open_record(flow, record)
    return record


def _answer_error(record: CallRecord) -> bytes:
    return error_body(record.dialect, 500, "the gateway failed while handling the provider's answer (gateway_error)",
                      "gateway_error")


def _took(flow, started: float) -> None:
    """Adds a phase's time to the call's gateway overhead (tollgate_gateway_overhead_seconds)."""
    if (record := record_of(flow)) is not None:
        record.overhead_s += time.perf_counter() - started


class Pipeline:
    """settings: when given, a step with active(config) False (a feature the configuration leaves unset) is left
    out of the flow hooks until a configuration turns it on: an idle step costs a call nothing."""

    def __init__(self, *steps, settings=None):
        self.steps = steps
        self._settings = settings
        self._built_for = None
        self._build(None)
        self._retries = [(s.wants, s.retry) for s in steps if callable(getattr(s, "retry", None))]

    def _build(self, config) -> None:
        steps = [s for s in self.steps if config is None or not hasattr(s, "active") or s.active(config)]
        self._hooks = {hook: [(getattr(s, hook), inspect.iscoroutinefunction(getattr(s, hook)),
                               getattr(s, "always", False), type(s).__name__)
                              for s in steps if callable(getattr(s, hook, None))]
                       for hook in GUARDED}
        self._hooks["responseheaders"].append((self._answer_headers, False, False, "Pipeline"))  # last, guarded too
        self._built_for = config

    def _current(self) -> None:
        """The hooks of the steps the current configuration uses (rebuilt after a reload). Runs outside the steps'
        guard, so it never raises: if a step cannot say whether it is active, every step runs."""
        if self._settings is not None and (config := self._settings.config) is not self._built_for:
            try:
                self._build(config)
            except Exception:
                log.exception("tollgate: choosing the active steps failed; every step runs")
                self._build(None)
                self._built_for = config

    # Lifecycle: forwarded as they are (a bad configuration must still fail the start loudly).
    def _each(self, hook: str, *args) -> None:
        for step in self.steps:
            if hasattr(step, hook):
                getattr(step, hook)(*args)

    def load(self, loader):
        internals.install()
        self._each("load", loader)

    def configure(self, updated):
        self._each("configure", updated)

    def running(self):  # sync on purpose: an async running() breaks hot reload of the script
        self._each("running")

    def client_disconnected(self, client):
        self._each("client_disconnected", client)

    def done(self):
        for step in self.steps:
            if hasattr(step, "done"):
                try:
                    step.done()
                except Exception:
                    log.exception("tollgate: %s failed while shutting down", type(step).__name__)
        internals.uninstall()

    # Flow hooks: guarded.
    async def http_connect(self, flow):
        await self._request_phase(flow, "http_connect")

    async def requestheaders(self, flow):
        if flow.error:  # refused by mitmproxy itself (bad framing): nothing goes upstream, no key shows anywhere
            strip_credentials(flow.request.headers)
            return
        await self._request_phase(flow, "requestheaders")

    async def request(self, flow):
        await self._request_phase(flow, "request")

    async def _request_phase(self, flow, stage: str) -> None:
        started = time.perf_counter()
        self._current()
        for hook, is_async, _, name in self._hooks[stage]:
            if flow.response or flow.error or not flow.live:
                break
            try:
                result = hook(flow)
                if is_async or (result is not None and inspect.isawaitable(result)):
                    await result
            except Exception as e:
                self.refuse(flow, stage, name, e)
                break
        _took(flow, started)

    def refuse(self, flow, stage: str, step: str, error: Exception) -> None:
        record = failure_record(flow)
        self._report(flow, stage, step, error)
        reject(flow, record, 500, GATEWAY_ERROR_MESSAGE, decision=Decision.GATEWAY_ERROR, code="gateway_error")
        record.reason = f"{step} failed in {stage}: {type(error).__name__}"
        record.untouched = False

    def responseheaders(self, flow):
        started = time.perf_counter()
        self._responseheaders(flow)
        _took(flow, started)

    def _responseheaders(self, flow):
        self._current()
        for hook, _, _, name in self._hooks["responseheaders"]:
            try:
                hook(flow)
            except Exception as e:
                record = failure_record(flow)
                self._report(flow, "responseheaders", name, e)
                self._withhold(flow, record, f"{name} failed in responseheaders: {type(e).__name__}")
                return

    @staticmethod
    def _answer_headers(flow) -> None:
        """What the steps add to the answer's head (CallRecord.add_answer_headers), in one pass."""
        if (record := record_of(flow)) is not None and record.answer_headers:
            set_headers(flow.response.headers, record.answer_headers)

    def _withhold(self, flow, record: CallRecord, reason: str) -> None:
        """The upstream answer is not passed on: the client gets a 500 in its provider's shape instead."""
        body = _answer_error(record)
        response = flow.response
        response.status_code = 500
        response.headers.clear()
        response.headers["content-type"] = "application/json"
        response.headers["content-length"] = str(len(body))
        response.stream = _Withhold(body)
        record.tap = None
        record.decision, record.reason, record.status = Decision.GATEWAY_ERROR, reason, 500
        record.answered_here = True  # what the client gets is the gateway's own answer

    async def websocket_message(self, flow):
        self._current()
        for hook, is_async, _, name in self._hooks["websocket_message"]:
            try:
                await hook(flow) if is_async else hook(flow)
            except Exception as e:  # the message is not passed on, and the session ends
                self._report(flow, "websocket_message", name, e)
                flow.websocket.messages[-1].drop()
                record = failure_record(flow)
                record.decision, record.reason = Decision.GATEWAY_ERROR, f"{name} failed: {type(e).__name__}"
                flow.kill()
                return

    def websocket_end(self, flow):
        return self._answer_phase(flow, "websocket_end")

    def response(self, flow):
        if self._retries and any(wants(flow) for wants, _ in self._retries):
            return self._after_retry(flow, "response")
        return self._answer_phase(flow, "response")

    def error(self, flow):
        if self._retries and any(wants(flow) for wants, _ in self._retries):
            return self._after_retry(flow, "error")
        return self._answer_phase(flow, "error")

    async def _after_retry(self, flow, stage: str) -> None:
        """A failed attempt another target may mend (fallback.py): the answer that comes of it meets the same
        steps as a first answer (its head, then the whole body through any stream tap), then the answer phase."""
        before = flow.response
        for wants, retry in self._retries:
            if not wants(flow):
                continue
            try:
                await retry(flow)
            except Exception as e:
                self._report(flow, stage, "Fallback", e)
                record = failure_record(flow)
                record.decision, record.reason = Decision.GATEWAY_ERROR, f"Fallback failed: {type(e).__name__}"
        if flow.error is None and flow.response is not None and flow.response is not before:
            self._replayed_head(flow)
        elif stage == "response" and flow.response is None:  # mitmproxy sends a response here: ours, in its shape
            record = failure_record(flow)
            record.status = 504 if record.decision == Decision.UPSTREAM_TIMEOUT else 502
            flow.response = http.Response.make(record.status, error_body(record.dialect, record.status, record.reason,
                                                                         "upstream_error"),
                                               {"content-type": "application/json"})
            flow.error = None
        rest = self._answer_phase(flow, "response" if flow.error is None else "error")
        if rest is not None:
            await rest

    def _replayed_head(self, flow) -> None:
        response = flow.response
        self._responseheaders(flow)
        tap = response.stream
        if callable(tap):  # a stream read whole: through its tap now, as it would have gone event by event
            response.stream = None
            body = response.raw_content or b""
            response.content = b"".join(tap(body) + tap(b""))

    async def tollgate_stream_wait(self, flow) -> None:
        """A streamed answer's next chunk waits for the check of an earlier window (internals.stream_wait)."""
        if (waiting := internals.waiting_for(flow)) is None:
            return
        try:
            await waiting
        except Exception as e:  # the tap finds the check unfinished: it holds the text (fail closed)
            self._report(flow, "stream_wait", "ContentSecurity", e)

    def _answer_phase(self, flow, stage: str, start: int = 0, failed: bool = False, hooks: list | None = None):
        """The answer-phase steps in order. A step may return an awaitable (a check it must wait for): the rest of
        the phase then continues once it is done, and the hook returns that continuation for mitmproxy to await."""
        if hooks is None:  # a continuation keeps the steps it started with, whatever a reload did meanwhile
            self._current()
            hooks = self._hooks[stage]
        for i in range(start, len(hooks)):
            hook, _, always, name = hooks[i]
            if failed and not always:
                continue
            try:
                result = hook(flow)
                if result is not None and inspect.isawaitable(result):
                    return self._answer_phase_after(flow, stage, hooks, i, result, failed)
            except Exception as e:
                self._step_failed(flow, stage, name, e, failed)
                failed = True
        return None

    async def _answer_phase_after(self, flow, stage: str, hooks: list, index: int, awaiting, failed: bool) -> None:
        try:
            await awaiting
        except Exception as e:
            self._step_failed(flow, stage, hooks[index][3], e, failed)
            failed = True
        rest = self._answer_phase(flow, stage, index + 1, failed, hooks)
        if rest is not None:
            await rest

    def _step_failed(self, flow, stage: str, name: str, e: Exception, failed: bool) -> None:
        record = failure_record(flow)
        self._report(flow, stage, name, e)
        reason = f"{name} failed in {stage}: {type(e).__name__}"
        if not failed and flow.response is not None and not flow.response.stream and stage == "response":
            flow.response = http.Response.make(500, _answer_error(record), {"content-type": "application/json"})
            record.status = 500
        if record.decision != Decision.GATEWAY_ERROR:
            record.decision, record.reason = Decision.GATEWAY_ERROR, reason

    @staticmethod
    def _report(flow, stage: str, step: str, error: Exception) -> None:
        GATEWAY_ERRORS.labels(stage).inc()
        frames = "".join(traceback.format_tb(error.__traceback__))
        log.error("tollgate: %s failed in %s for flow %s: %s (message withheld)\n%s", step, stage, flow.id,
                  type(error).__name__, frames.rstrip())
