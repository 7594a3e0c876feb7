"""Content security services at the gate (core/content_security.py): prompts and answers checked by an external
moderation service, an LLM judge or a webhook, behind tollgate's own rules (which stay the fast first line).

- Prompt (after the guard, before the cache): a violation is refused with 403 in the provider's shape naming the rule
  and category (never the text); a webhook may mask spans instead.
- Plain answer: replaced by the moderation refusal, in the provider's shape.
- Streamed answer: checked in windows of `window_chars` while it streams. Each window is held until its check is
  done, and the next upstream chunk is not processed before that (see internals.stream_wait): text reaches the client
  one window behind the provider, never more, and a violation cuts the stream at the window with a clean end.
- Cheap and bounded: a verdict cache in the shared store (the same text under the same rule is checked once), a
  timeout and a concurrency limit per service; `on_error: open` lets a call through when a service fails or times
  out, `closed` refuses it (503). Metrics: tollgate_content_security_seconds{service}, _verdicts_total{rule,verdict},
  _errors_total{service}. The ledger's content_security column: `rule:verdict:category`."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import httpx

from tollgate import internals
from tollgate.core import wire
from tollgate.core.answers import refuse_answer
from tollgate.core.content_security import (Verdict, judge_verdict, moderation_verdict, verdict_key,
                                            webhook_verdict)
from tollgate.core.record import Decision
from tollgate.flows import pending, record_of, reject
from tollgate.metrics import CS_ERRORS, CS_LATENCY, CS_VERDICTS

log = logging.getLogger("tollgate")
SYSTEM = "system:content-security"


class Checker:
    """Asks the services; the verdict cache, timeouts, concurrency limits and on_error live here."""

    def __init__(self, settings, calls):
        self.settings = settings
        self.calls = calls
        self._limits: dict[str, asyncio.Semaphore] = {}

    def rules(self, direction: str, record) -> list:
        security = self.settings.config.content_security
        if security is None:
            return []
        return [r for r in security.rules if r.applies_to(direction, record.consumer, record.group)]

    async def first_violation(self, direction: str, text: str, record) -> tuple | None:
        """(rule, verdict) of the first rule the text violates (or whose service failed under on_error: closed),
        else None. Every verdict is noted on the record."""
        rules = self.rules(direction, record)
        if not rules or not text.strip():
            return None
        verdicts = await asyncio.gather(*(self.check(rule, direction, text, record) for rule in rules))
        closed = self.settings.config.content_security.on_error == "closed"
        for rule, verdict in zip(rules, verdicts):
            if verdict.action != "allow":
                note = f"{rule.name}:{verdict.action}:{verdict.category}"
                record.content_security = f"{record.content_security}, {note}" if record.content_security else note
        for rule, verdict in zip(rules, verdicts):
            if verdict.action in ("block", "mask") or (verdict.action == "error" and closed):
                return rule, verdict
        return None

    async def check(self, rule, direction: str, text: str, record) -> Verdict:
        security = self.settings.config.content_security
        service = security.services[rule.service]
        key = verdict_key(rule, direction, text)
        store = self.settings.store()
        if (data := await store.lookup(key)) and (cached := Verdict.unpack(data)):
            CS_VERDICTS.labels(rule.name, cached.action).inc()
            return cached
        limit = self._limits.setdefault(service.name, asyncio.Semaphore(service.concurrency))
        started = time.perf_counter()
        try:
            async with asyncio.timeout(service.timeout_s):
                async with limit:
                    verdict = await self._ask(service, rule, direction, text, record)
        except (TimeoutError, httpx.HTTPError, ValueError, KeyError, TypeError) as e:
            CS_ERRORS.labels(service.name).inc()
            log.warning("tollgate: content security service %s failed (%s); on_error: %s", service.name,
                        type(e).__name__, security.on_error)
            verdict = Verdict("error", "", f"{service.name}: {type(e).__name__}")
        else:
            store.set_later(key, verdict.pack(), security.cache_ttl_s)
        CS_LATENCY.labels(service.name).observe(time.perf_counter() - started)
        CS_VERDICTS.labels(rule.name, verdict.action).inc()
        return verdict

    async def _ask(self, service, rule, direction: str, text: str, record) -> Verdict:
        if service.type == "webhook":
            response = await self.calls.http().post(service.url, json={
                "direction": direction, "consumer": record.consumer, "group": record.group,
                "model": record.model or record.requested_model, "text": text}, timeout=service.timeout_s)
            response.raise_for_status()
            return webhook_verdict(response.json(), text)
        if service.type == "openai-moderation":
            answer, row = await self.calls.post(service.provider, "/v1/moderations",
                                                {"model": service.model, "input": text}, consumer=SYSTEM,
                                                timeout=service.timeout_s)
            if answer is None:
                raise ValueError(row.reason)
            return moderation_verdict(rule, answer)
        answer, row = await self.calls.post(service.provider, "/v1/chat/completions", {
            "model": service.model, "temperature": 0, "max_tokens": 32,
            "messages": [{"role": "system", "content": service.prompt}, {"role": "user", "content": text}]},
            consumer=SYSTEM, timeout=service.timeout_s)
        if answer is None:
            raise ValueError(row.reason)
        return judge_verdict(rule, answer["choices"][0]["message"]["content"])


def prompt_text(record) -> str:
    return "\n\n".join(wire.of(record.dialect).transcript(record.body or {}))


def _mask(node, pieces: list[str]):
    if isinstance(node, str):
        for piece in pieces:
            node = node.replace(piece, "[REDACTED]")
        return node
    if isinstance(node, list):
        return [_mask(v, pieces) for v in node]
    if isinstance(node, dict):
        return {k: _mask(v, pieces) for k, v in node.items()}
    return node


class _ServiceStep:
    """A pipeline step that asks the content security services (only called with content_security set)."""

    def __init__(self, settings, checker: Checker):
        self.settings = settings
        self.checker = checker

    @staticmethod
    def active(config) -> bool:
        return config.content_security is not None


class PromptSecurity(_ServiceStep):
    """After the guard: the prompt is checked by the services (403, 503 under on_error: closed, or masked)."""

    async def request(self, flow):
        if not (record := pending(flow)) or record.body is None or not self.checker.rules("prompt", record):
            return
        text = prompt_text(record)
        found = await self.checker.first_violation("prompt", text, record)
        if found is None:
            return
        rule, verdict = found
        if verdict.action == "error":
            return reject(flow, record, 503, f"content security is unavailable (rule '{rule.name}'); retry shortly",
                          code="content_security_unavailable", headers={"retry-after": "5"})
        if verdict.action == "mask":
            record.body = _mask(record.body, [text[a:b] for a, b in verdict.spans])
            record.body_changed = True
            return
        reject(flow, record, 403, f"prompt refused by content security rule '{rule.name}'"
                                  + (f" ({verdict.category})" if verdict.category else ""),
               code="content_policy_violation")


class AnswerSecurity(_ServiceStep):
    """After the answer guard: plain answers checked whole, streams window by window."""

    def load(self, loader):
        internals.stream_wait = self._stream_wait

    def responseheaders(self, flow):
        record = record_of(flow)
        if (record is None or record.tap is None or record.answered_here or flow.response.status_code != 200
                or not self.checker.rules("answer", record)):
            return
        record.tap.gate = StreamGate(record.dialect, self.settings.config.content_security.window_chars,
                                     lambda text: asyncio.get_running_loop().create_task(
                                         self.checker.first_violation("answer", text, record)),
                                     self.settings.config.refusal)

    def response(self, flow):
        record = record_of(flow)
        if record is None or record.answered_here or flow.response.status_code != 200:
            return None
        if record.tap is not None:
            gate = getattr(record.tap, "gate", None)
            if gate is not None and gate.violated:
                rule, verdict = gate.violated
                record.moderation, record.decision = f"{rule.name}:cut", Decision.MODERATED
                record.reason = f"answer cut by content security rule '{rule.name}'"
            return None
        if not self.checker.rules("answer", record):
            return None
        return self._plain(flow, record)

    async def _plain(self, flow, record) -> None:
        try:
            body = json.loads(flow.response.get_content(strict=False) or b"null")
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(body, dict):
            return
        found = await self.checker.first_violation("answer", wire.of(record.dialect).answer_text(body), record)
        if found is None:
            return
        rule, _ = found
        refuse_answer(record.dialect, body, self.settings.config.refusal.format(rule=rule.name))
        flow.response.content = json.dumps(body, ensure_ascii=False).encode()
        record.moderation, record.decision = f"{rule.name}:refused", Decision.MODERATED
        record.reason = f"answer withheld by content security rule '{rule.name}'"

    # --- streams: the next chunk waits for the window's check ------------------------------------------------
    @staticmethod
    def _stream_wait(flow, final: bool):
        record = record_of(flow)
        gate = getattr(record.tap, "gate", None) if record is not None and record.tap is not None else None
        if gate is None or gate.violated:
            return None
        if final:
            record.tap.prepare_end()  # what the end of the stream releases is checked before it goes
        return gate.settled() if gate.pending else None


class StreamGate:
    """Holds the client's events until the window they belong to is checked. feed() takes the events the tap would
    send and returns those it may send now."""

    def __init__(self, dialect: str, window: int, start_check, refusal: str):
        self.dialect = dialect
        self.window = window
        self.start_check = start_check      # text -> task of (rule, verdict) | None
        self.refusal = refusal
        self.held: list[bytes] = []         # events not yet checked
        self.held_text = ""
        self.pending: list[tuple[object, list[bytes], str]] = []  # (task, its events, its text), in order
        self.violated = None
        self._template = None               # the last text event: (object, path, name, channel), for a refusal

    def feed(self, events: list[bytes], end: bool = False) -> list[bytes]:
        if self.violated:
            return []
        for raw in events:
            self.held.append(raw)
            self.held_text += self._text(raw)
            if len(self.held_text) >= self.window:
                self._close_window()
        if end and (self.held or self.held_text):
            self._close_window()
        return self._release()

    def _close_window(self) -> None:
        task = self.start_check(self.held_text) if self.held_text.strip() else None
        self.pending.append((task, self.held, self.held_text))
        self.held, self.held_text = [], ""

    def _release(self) -> list[bytes]:
        out = []
        while self.pending:
            task, events, _ = self.pending[0]
            if task is not None and not task.done():
                break  # checked before the next chunk (internals.stream_wait); the end waits for it too
            self.pending.pop(0)
            found = task.result() if task is not None and not task.cancelled() and not task.exception() else None
            if found is not None:
                self.violated = found
                self.pending.clear()
                return out + self._cut(found[0])
            out += events
        return out

    async def settled(self) -> None:
        await asyncio.gather(*(task for task, _, _ in self.pending if task is not None), return_exceptions=True)

    def _text(self, raw: bytes) -> str:
        from tollgate.core.sse import parse_event

        name, data = parse_event(raw)
        try:
            obj = json.loads(data) if data else None
        except ValueError:
            return ""
        if not isinstance(obj, dict):
            return ""
        deltas, _ = wire.of(self.dialect).stream_deltas(obj)
        text = ""
        for channel, path, _ in deltas:
            value = obj
            for key in path:
                value = value[key]
            text += value if isinstance(value, str) else ""
            self._template = (obj, path, name, channel)
        return text

    def _cut(self, rule) -> list[bytes]:
        if self._template is None:
            return []
        obj, path, name, channel = self._template
        return wire.of(self.dialect).refusal_events(obj, path, name, channel, self.refusal.format(rule=rule.name))
