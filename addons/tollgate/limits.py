"""Rate limits and budgets. Two addons for one concern, at the two places it acts:

Admit (after the guard, before the cache): every limit that applies reserves the call's worst case (one request;
estimated prompt + max output tokens; their price for budgets), all in one atomic store call: if any counter has no
room, none is charged and the call is answered 429 (or the rule's code) in the provider's shape, with retry-after;
an exhausted budget says insufficient_quota and x-should-retry: false, so SDKs do not retry in vain. Every answer
carries x-ratelimit-* headers for the tightest request and token rule.

Settle (after Meter): the reservation is corrected to what the call used (a stream cut short: what was streamed; a
cache hit: nothing but the request, unless limits.cache_hits says otherwise), in a spawned task.

A store that cannot answer: limits.on_store_error open (default) serves the call uncounted, closed answers 503."""

from __future__ import annotations

import math
import time
from typing import NamedTuple

from tollgate.core import limits as core
from tollgate.core.record import Decision
from tollgate.core.store import StoreError
from tollgate.metrics import BUDGET_LIMIT, BUDGET_SPENT
from tollgate.flows import THREAD_ABOVE_CHARS, off_loop_if, pending, record_of, reject, set_headers


class Reservation(NamedTuple):  # a tuple: made for every limit of every call
    limit: core.Limit
    counter: core.Counter
    slot: int


def _micro(usd: float) -> int:
    return math.ceil(usd * 1e6)


class Admit:
    def __init__(self, settings):
        self.settings = settings
        self._gauges: dict[tuple, object] = {}  # (rule, period, amount, subject) -> gauge child

    async def request(self, flow):
        if not (record := pending(flow)):
            return
        config = self.settings.config
        big = len(flow.request.raw_content or b"") > THREAD_ABOVE_CHARS
        model = record.model or record.requested_model
        args = (record.endpoint, model, record.body, config.limits.default_max_tokens)
        refusal = await self.admit(record, record.client_headers or flow.request.headers,
                                   lambda: off_loop_if(big, core.reservation, *args))
        if refusal is not None:
            reject(flow, record, *refusal[:2], decision=refusal[2], code=refusal[3], headers=refusal[4])

    async def admit(self, record, headers, estimate) -> tuple | None:
        """Reserves a call's worst case on every limit that applies, all or none (record.reservations then holds
        them, record.limit_headers the x-ratelimit-* headers). estimate: async () -> (prompt, output tokens).
        Returns None when admitted, else the refusal: (status, message, decision, code, headers)."""
        config = self.settings.config
        if not config.limits.limits:
            return None
        model = record.model or record.requested_model
        call = core.Call(record.consumer, record.group, record.client_ip, model, headers)
        now = time.time()
        applicable = config.limits.applicable(call, now)
        if not applicable:
            return None
        costs = {"requests": 1}
        if any(limit.kind != "requests" for limit, _, _ in applicable):
            prompt, output = await estimate()
            costs["tokens"] = prompt + output
            costs["usd"] = _micro(config.priced(record.provider, model, prompt, output).usd)
        counters = [core.counter(limit, key, costs[limit.kind], now) for limit, key, _ in applicable]
        store = self.settings.store()
        fetch = record.cache_key if record.cache_lookup else ""  # the cache's entry comes in the same round trip
        try:
            reserved = store.reserve_now(counters, fetch) if store.in_process else await store.reserve(counters, fetch)
            if fetch:
                states, record.cache_entry = reserved
                record.cache_fetched = True
            else:
                states = reserved
        except StoreError:
            record.limited_by = "store unavailable"
            if config.limits.on_store_error == "closed":
                return (503, "rate limits cannot be checked right now (shared store unavailable)",
                        Decision.LIMITED, "store_unavailable", {"retry-after": "1"})
            return None  # open: served uncounted (a reservation that did go through expires with its window)
        for (limit, _, value), state in zip(applicable, states):
            if limit.kind == "usd":  # budgets (per global, consumer or group): what the store last said
                self._gauge(limit, value).set(state.used / 1e6)
        pairs = [(limit, state) for (limit, _, _), state in zip(applicable, states)]
        headers = core.rate_headers(pairs, now)
        refused = [(limit, state) for limit, state in pairs if not state.admitted]
        if refused:
            return self._refusal(record, refused, costs, headers, now)
        record.reservations = [Reservation(limit, c, state.slot) for (limit, state), c in zip(pairs, counters)]
        record.limit_headers = headers
        return None

    def _gauge(self, limit, value: str):
        """The budget's spent gauge for this subject (label children are looked up once: labels() locks)."""
        key = (limit.rule, limit.period, limit.amount, value)  # a reload that changes the amount sets it anew
        if (gauge := self._gauges.get(key)) is None:
            BUDGET_LIMIT.labels(limit.rule, limit.period).set(limit.amount / 1e6)
            gauge = self._gauges[key] = BUDGET_SPENT.labels(limit.rule, limit.period, value or "all")
        return gauge

    @staticmethod
    def _refusal(record, refused, costs, headers, now) -> tuple:
        waits = [(core.retry_after_ms(limit, state, costs[limit.kind], now), limit) for limit, state in refused]
        never = [limit for wait, limit in waits if wait is None]
        wait_ms, limit = max(waits, key=lambda w: w[0] or 0) if not never else (None, never[0])
        budget = limit.kind == "usd"
        if limit.message:
            message = limit.message
        elif never:
            message = (f"request needs more than rule '{limit.rule}' allows at all ({limit.describe()}); "
                       f"lower max_tokens or the prompt")
        elif budget:
            state = next(state for refused_limit, state in refused if refused_limit is limit)
            message = (f"budget '{limit.rule}': this call's worst case (${costs['usd'] / 1e6:.4f}) does not fit: "
                       f"${state.used / 1e6:.4f} of ${limit.amount / 1e6:.2f} per {limit.period} spent; "
                       f"lower max_tokens, or wait {core.format_duration(wait_ms)} for the budget to renew")
        else:
            message = (f"rate limit '{limit.rule}' exceeded ({limit.describe()}); "
                       f"retry in {core.format_duration(wait_ms)}")
        if wait_ms is not None:
            headers |= {"retry-after": str(max(1, math.ceil(wait_ms / 1000))), "retry-after-ms": str(wait_ms)}
        if budget or never:
            headers["x-should-retry"] = "false"
        record.limited_by = limit.rule
        return (limit.status, message, Decision.OVER_BUDGET if budget else Decision.LIMITED,
                "insufficient_quota" if budget else "rate_limit_exceeded", headers)

    def responseheaders(self, flow):
        record = record_of(flow)
        if record is not None and record.limit_headers:
            record.add_answer_headers(record.limit_headers)

    def response(self, flow):  # answers made at the gate (cache hits) pass no responseheaders hook
        record = record_of(flow)
        if record is not None and record.limit_headers and record.answered_here:
            set_headers(flow.response.headers, record.limit_headers)


class Settle:
    always = True  # bookkeeping: runs even after another step failed

    def __init__(self, settings):
        self.settings = settings

    def response(self, flow):
        record = record_of(flow)
        if record is None or not record.reservations:
            return
        reservations, record.reservations = record.reservations, None  # once per call
        counts = self.settings.config.limits.cache_hits
        hit = record.cache == "hit"
        self.settle(reservations, requests=0 if hit and counts == "none" else 1,
                    tokens=0 if hit and counts != "all" else record.total_tokens,
                    usd=(0 if hit and counts != "all" else record.saved_usd if hit else record.cost_usd)
                    + record.extra_usd)

    def settle(self, reservations: list[Reservation], requests: int, tokens: int, usd: float) -> None:
        """Corrects reservations to what was used (in a spawned task: the answer does not wait for the store)."""
        actual = {"requests": requests, "tokens": tokens, "usd": _micro(usd)}
        corrections = [(r.counter, r.slot, delta) for r in reservations
                       if (delta := actual[r.limit.kind] - r.counter.cost)]
        if corrections:
            self.settings.store().settle_later(corrections)

    def error(self, flow):
        self.response(flow)
