"""Realtime sessions (OpenAI /v1/realtime, and any WebSocket LLM API at a provider host) pass the gate too.

The handshake is an ordinary call: authenticated, routed with the org key, authorised by its `?model=`, refused
with 403 when `realtime: deny`. Once the session is open:
- client events that hand the model text (conversation items, instructions) are checked by the prompt rules: a
  `block` finding drops the event and the client gets the API's error event; `mask` findings are replaced in place;
- each `response.create` reserves its worst case on the limits and budgets (text since the last response + its
  max_output_tokens), or is dropped with an error event; each `response.done` settles that reservation to the usage
  it reports, and adds it to the session's totals;
- a session cut mid-response is charged what the provider reported, or the reservation's estimate of what was
  streamed; the session gets one ledger row with its totals when it ends.
Every message the gate lets through is what it checked; older messages are not kept in the flow (bounded memory)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from mitmproxy import ctx

from tollgate.core import realtime, tokens
from tollgate.core.guard import mask, scan
from tollgate.flows import pending, record_of, reject

KEEP_MESSAGES = 50  # messages a session's flow keeps for mitmweb; older ones are dropped from memory


@dataclass
class Session:
    pending: list = field(default_factory=list)      # reservations of responses under way, oldest first
    prompt: list[str] = field(default_factory=list)  # client text since the last response.create
    streamed: list[str] = field(default_factory=list)  # text of the response under way
    findings: dict = field(default_factory=dict)      # (rule, action) -> count, over the whole session


class Realtime:
    def __init__(self, settings, admit, settle):
        self.settings = settings
        self.admit = admit
        self.settle = settle

    def request(self, flow):
        if not (record := pending(flow)):
            return
        upgrade = (record.client_headers or flow.request.headers).get("upgrade", "").lower() == "websocket"
        if not realtime.is_realtime(record.endpoint):
            if upgrade:  # a WebSocket API the gate cannot read (e.g. Gemini Live) would be spend it cannot meter
                return reject(flow, record, 403, f"WebSocket sessions to {record.endpoint} are not supported by the "
                                                 f"gateway (only the Realtime API's)", code="realtime_not_supported")
            return
        if self.settings.config.realtime == "deny":
            return reject(flow, record, 403, "realtime sessions are not allowed by the gateway",
                          code="realtime_not_allowed")
        record.session = Session()

    def response(self, flow):
        record = record_of(flow)
        if record is not None and record.session is not None and flow.websocket is not None:
            record.session_open = True  # the ledger row waits for the session's end

    async def websocket_message(self, flow):
        record = record_of(flow)
        if record is None or record.session is None:
            return
        message = flow.websocket.messages[-1]
        if len(flow.websocket.messages) > KEEP_MESSAGES:
            del flow.websocket.messages[:-KEEP_MESSAGES]
        event = realtime.parse(message.content) if message.is_text else None
        if event is None:
            return
        if message.from_client:
            await self._from_client(flow, record, message, event)
        else:
            self._from_server(record, event)

    async def _from_client(self, flow, record, message, event: dict) -> None:
        config = self.settings.config
        slots = realtime.text_slots(event)
        texts = [container[key] for container, key in slots]
        if texts and config.guard_rules:
            findings = scan(config.guard_rules, texts, record.consumer, record.group)
            if findings:
                for f in findings:
                    key = (f.rule, f.action)
                    record.session.findings[key] = record.session.findings.get(key, 0) + f.count
                record.guard = ", ".join(f"{rule}:{action}×{count}"
                                         for (rule, action), count in record.session.findings.items())
                if blocking := next((f for f in findings if f.action == "block"), None):
                    return self._refuse(flow, message, f"blocked by rule '{blocking.rule}'", "content_blocked")
                if any(f.action == "mask" for f in findings):
                    masked, _ = mask(config.guard_rules, texts, record.consumer, record.group)
                    for (container, key), text in zip(slots, masked):
                        container[key] = text
                    message.content = json.dumps(event, ensure_ascii=False).encode()
                    texts = masked
        record.session.prompt += texts
        if event.get("type") == "response.create":
            await self._reserve(flow, record, message, event)

    async def _reserve(self, flow, record, message, event: dict) -> None:
        session = record.session
        model = record.model or record.requested_model
        output = realtime.max_output(event, self.settings.config.limits.default_max_tokens)

        async def estimate():
            return sum(tokens.count_text(model, t) for t in session.prompt), output
        refusal = await self.admit.admit(record, flow.request.headers, estimate)
        session.prompt = []
        if refusal is not None:  # the session goes on; its row names the rule (limited_by)
            return self._refuse(flow, message, refusal[1], refusal[3])
        session.pending.append(record.reservations or [])
        record.reservations = None
        session.streamed = []

    def _from_server(self, record, event: dict) -> None:
        session = record.session
        if text := realtime.delta_text(event):
            session.streamed.append(text)
        if event.get("type") != "response.done":
            return
        usage = realtime.usage_of(event)
        reservations = session.pending.pop(0) if session.pending else []
        used_in = usage.prompt_tokens if usage else 0
        used_out = usage.completion_tokens if usage else self._streamed_tokens(record)
        record.prompt_tokens += used_in
        record.completion_tokens += used_out
        record.cached_tokens += usage.cached_tokens if usage else 0
        record.usage_source = "provider" if usage else "estimate"
        self.settle.settle(reservations, 1, used_in + used_out, self._cost(record, used_in, used_out))
        session.streamed = []

    def _streamed_tokens(self, record) -> int:
        return tokens.count_text(record.model or record.requested_model, "".join(record.session.streamed))

    def _cost(self, record, prompt: int, output: int) -> float:
        return self._priced(record, prompt, output).usd

    def _priced(self, record, prompt: int, output: int):
        return self.settings.config.priced(record.provider, record.model or record.requested_model, prompt, output,
                                           record.cached_tokens if prompt == record.prompt_tokens else 0,
                                           at=record.started_at)

    @staticmethod
    def _refuse(flow, message, text: str, code: str) -> None:
        message.drop()
        ctx.master.commands.call("inject.websocket", flow, True, realtime.error_event(text, code), True)

    def websocket_end(self, flow):
        record = record_of(flow)
        if record is None or record.session is None:
            return
        for reservations in record.session.pending:  # cut mid-response: charged the estimate of what streamed
            streamed = self._streamed_tokens(record)
            record.completion_tokens += streamed
            record.usage_source = "estimate"
            self.settle.settle(reservations, 1, streamed, self._cost(record, 0, streamed))
            record.session.streamed = []
        record.session.pending = []
        priced = self._priced(record, record.prompt_tokens, record.completion_tokens)
        record.cost_usd, record.priced_by = round(priced.usd, 8), priced.by
        if flow.websocket is not None and flow.websocket.timestamp_end:
            record.latency_ms = round((flow.websocket.timestamp_end - record.started_at) * 1000, 2)
        record.session_open = False
