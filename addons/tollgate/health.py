"""Key and provider health (core/health.py), fed by the outcome of every attempt, and shared by all replicas.

Every attempt's outcome counts: a key answered 401/403 is taken out and logged loudly (an operator must replace it),
429 cools it down, connect errors, timeouts and 5xx open a provider's breaker after `breaker.failures` in a row.
With a Redis store, each state change is written there (tg:health:<name>) and every replica reads all of them once
a second, so a cool-down or an open breaker decided by one replica is honoured by all within a second. The in-flight
count per provider (strategy least_busy) is this process's own. Metrics: tollgate_key_state{provider,key} (a short
key id, never the key) and tollgate_provider_state{provider}."""

from __future__ import annotations

import asyncio
import json
import logging
import weakref

from tollgate.core import health as core
from tollgate.core.record import Decision
from tollgate.flows import header, record_of
from tollgate.metrics import KEY_STATE, PROVIDER_STATE, RETRIES

log = logging.getLogger("tollgate")
SYNC_EVERY_S = 1.0
STORE_PREFIX = "tg:health:"
_LEVEL = {"ok": 0, "cooling": 1, "out": 2, "closed": 0, "half_open": 1, "open": 2}
ATTEMPTS_HEADER = "x-tollgate-attempts"


class Health:
    def __init__(self, settings):
        self.settings = settings
        self.state: core.Health | None = None
        self.budget: core.RetryBudget | None = None
        self._of = None  # the configuration state and budget were made for
        self._inflight: dict[str, weakref.WeakSet] = {}
        self._counts_busy = False  # only strategy least_busy asks how busy a provider is
        self._sync: asyncio.Task | None = None

    # --- for Route and Fallback ------------------------------------------------------------------------------
    def current(self) -> core.Health:
        config = self.settings.config
        if self._of is not config:  # a reload keeps what is known about keys and providers
            old = self.state
            self.state = core.Health(config.breaker.failures, config.breaker.cooldown_s)
            if old is not None:
                self.state.states, self.state.failures = old.states, old.failures
            self.budget = core.RetryBudget(config.retry.budget, config.retry.min_per_minute)
            self._counts_busy = any(rule.strategy == "least_busy" for rule in config.rules)
            self._of = config
        return self.state

    def busy(self, provider: str) -> int:
        return len(self._inflight.get(provider, ()))

    def started(self, flow, provider: str) -> None:
        if not self._counts_busy:
            return
        self.finished(flow)
        self._inflight.setdefault(provider, weakref.WeakSet()).add(flow)

    def finished(self, flow) -> None:
        for flows in self._inflight.values():
            flows.discard(flow)

    def may_retry(self) -> bool:
        self.current()
        if self.budget.try_retry():
            RETRIES.labels("retried").inc()
            return True
        RETRIES.labels("over_budget").inc()
        return False

    def outcome(self, record, status: int | None, retry_after: str = "") -> None:
        state = self.current()
        state.outcome(record.provider, record.key_id, status, retry_after)
        for name, change in state.take_changes():
            self._announce(name, change)
            self._share(name, change)

    # --- hooks -----------------------------------------------------------------------------------------------
    def running(self):
        if self._sync is None and not self.settings.store().in_process:
            self._sync = asyncio.get_running_loop().create_task(self._follow())

    def done(self):
        if self._sync is not None:
            self._sync.cancel()

    def responseheaders(self, flow):
        record = record_of(flow)
        if record is not None and record.attempts and not record.answered_here:
            record.add_answer_headers({ATTEMPTS_HEADER: str(record.attempts)})

    def response(self, flow):
        record = record_of(flow)
        if record is None or not record.attempts:
            return
        self.finished(flow)
        if record.answered_here and record.decision != Decision.FORWARDED:
            record.attempts = 0  # refused or answered at the gate (guard, limits, cache): nothing went out
            return
        self.outcome(record, flow.response.status_code, header(flow.response.headers, "retry-after", ""))

    def error(self, flow):
        record = record_of(flow)
        if record is None or not record.attempts:
            return
        self.finished(flow)
        if record.decision in (Decision.UPSTREAM_ERROR, Decision.UPSTREAM_TIMEOUT) and not record.tap:
            self.outcome(record, None)

    # --- sharing ---------------------------------------------------------------------------------------------
    def _announce(self, name: str, change: core.State) -> None:
        kind, _, rest = name.partition(":")
        if kind == "key":
            provider, _, kid = rest.partition(":")
            level = logging.ERROR if change.why.startswith("out") else logging.WARNING
            log.log(level, "tollgate: org key %s of provider %s is %s%s", kid, provider, change.why,
                    "; replace it in the configuration" if change.why.startswith("out") else "")
        else:
            log.warning("tollgate: provider %s breaker %s", rest, change.why)
        self._gauge(name)
        if (wait := change.until - self.state.clock()) > 0:  # the gauge follows when the state ends by itself
            try:
                asyncio.get_running_loop().call_later(min(wait, 86400) + 0.01, self._gauge, name)
            except RuntimeError:
                pass

    def _gauge(self, name: str) -> None:
        kind, _, rest = name.partition(":")
        if kind == "key":
            provider, _, kid = rest.partition(":")
            KEY_STATE.labels(provider, kid).set(_LEVEL[self.state.key_state(provider, kid)])
        else:
            PROVIDER_STATE.labels(rest).set(_LEVEL[self.state.provider_state(rest)])

    def _share(self, name: str, change: core.State) -> None:
        store = self.settings.store()
        if store.in_process:
            return
        ttl = max(change.until - change.since, 0) + 3600
        store.set_later(STORE_PREFIX + name, json.dumps([change.until, change.since, change.why]).encode(), ttl)

    def _names(self) -> list[str]:
        config = self.settings.config
        names = []
        for provider in config.providers.values():
            names.append(f"provider:{provider.name}")
            names += [f"key:{provider.name}:{core.key_id(key)}" for key in provider.keys]
        return names

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(SYNC_EVERY_S)
            try:
                await self.pull()
            except Exception:  # never let the follower die: health is then this replica's own until it recovers
                log.exception("tollgate: reading the shared health states failed")

    async def pull(self) -> None:
        names = self._names()
        values = await self.settings.store().lookup_many([STORE_PREFIX + n for n in names])
        state = self.current()
        for name, value in zip(names, values):
            if not value:
                continue
            until, since, why = json.loads(value)
            change = core.State(float(until), float(since), str(why))
            if state.merge(name, change):
                self._announce(name, change)
