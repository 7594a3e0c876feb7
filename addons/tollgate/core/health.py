"""Key and provider health, and the retry budget: plain state with an injected clock.

- A key answered 401/403 is out (until the operator replaces it: a new key is a new id); 429 cools it down for the
  answer's retry-after (or 60 s).
- A provider that fails `breaker.failures` times in a row (connect error, timeout, 5xx) is open: skipped for
  `breaker.cooldown`, then half-open: one call probes it; its success closes the breaker, its failure opens it again.
- Retries stay within `retry.budget` of the calls of the last minute (at least `min_per_minute`): no retry storms.

States are "name -> (until, since)"; `since` orders changes, so replicas sharing them through the store agree on the
latest (see fallback.py)."""

from __future__ import annotations

import functools
import hashlib
import math
import time
from dataclasses import dataclass

KEY_OUT_S = 7 * 86400          # "out until fixed": a week, renewed while the key keeps failing
DEFAULT_COOLDOWN_S = 60.0
MAX_COOLDOWN_S = 3600.0        # a provider's retry-after cannot bench a key for longer than this


@functools.lru_cache(maxsize=1024)  # org keys, from the configuration: asked for on every call
def key_id(key: str) -> str:
    """A short, stable name for an org key in logs and metrics (never the key)."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


@dataclass
class State:
    until: float        # epoch seconds: out before this
    since: float        # when this state was decided (the latest decision wins)
    why: str = ""


class Health:
    def __init__(self, failures: int, cooldown_s: float, clock=time.time):
        self.failures_to_open = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.states: dict[str, State] = {}      # "key:<provider>:<id>" | "provider:<name>"
        self.failures: dict[str, int] = {}      # provider -> failures in a row (this process)
        self.probe_until: dict[str, float] = {}  # provider -> a half-open probe is out until then
        self.changed: list[tuple[str, State]] = []  # decided here, to share and to log

    # --- reading ---------------------------------------------------------------------------------------------
    def key_usable(self, provider: str, kid: str) -> bool:
        state = self.states.get(f"key:{provider}:{kid}")
        return state is None or state.until <= self.clock()

    def provider_state(self, provider: str) -> str:
        state = self.states.get(f"provider:{provider}")
        if state is None or state.until == 0:
            return "closed"
        return "open" if state.until > self.clock() else "half_open"

    def provider_usable(self, provider: str, claim: bool = True) -> bool:
        """Closed: yes. Open: no. Half-open: yes for the one call that claims the probe."""
        state = self.provider_state(provider)
        if state != "half_open":
            return state == "closed"
        now = self.clock()
        if self.probe_until.get(provider, 0) > now:
            return False
        if claim:
            self.probe_until[provider] = now + self.cooldown_s  # a probe that never reports frees itself
        return True

    def key_state(self, provider: str, kid: str) -> str:
        state = self.states.get(f"key:{provider}:{kid}")
        if state is None or state.until <= self.clock():
            return "ok"
        return "out" if state.why.startswith("out") else "cooling"

    # --- outcomes --------------------------------------------------------------------------------------------
    def outcome(self, provider: str, kid: str, status: int | None, retry_after: str = "") -> None:
        """What an attempt got: a status, or None when the provider could not be reached or did not answer."""
        now = self.clock()
        if status in (401, 403) and kid:
            self._set(f"key:{provider}:{kid}", now + KEY_OUT_S, f"out: the provider answered {status}")
        elif status == 429 and kid:
            wait = _seconds(retry_after)
            self._set(f"key:{provider}:{kid}", now + wait, f"cooling {wait:g} s: the provider answered 429")
        if status is None or status >= 500:
            self.failures[provider] = failures = self.failures.get(provider, 0) + 1
            half_open = self.provider_state(provider) == "half_open"
            self.probe_until.pop(provider, None)
            if failures >= self.failures_to_open or half_open:
                why = "the probe failed" if half_open else f"{failures} failures in a row"
                self._set(f"provider:{provider}", now + self.cooldown_s, f"open: {why}")
        elif status < 500:  # an answer: the provider works (a key's own trouble is not the provider's)
            self.failures[provider] = 0
            self.probe_until.pop(provider, None)
            if self.provider_state(provider) != "closed":
                self._set(f"provider:{provider}", 0, "closed: it answered again")

    def _set(self, name: str, until: float, why: str) -> None:
        state = State(until, self.clock(), why)
        self.states[name] = state
        self.changed.append((name, state))

    def merge(self, name: str, state: State) -> bool:
        """A state another replica decided; True if it is newer than ours."""
        mine = self.states.get(name)
        if mine is not None and mine.since >= state.since:
            return False
        self.states[name] = state
        return True

    def take_changes(self) -> list[tuple[str, State]]:
        changed, self.changed = self.changed, []
        return changed


def _seconds(retry_after: str) -> float:
    try:
        value = float(retry_after)
    except (TypeError, ValueError):
        return DEFAULT_COOLDOWN_S
    return min(value, MAX_COOLDOWN_S) if math.isfinite(value) and value > 0 else DEFAULT_COOLDOWN_S


class RetryBudget:
    """Calls and retries over the last minute, in ten-second buckets."""

    BUCKET_S, BUCKETS = 10, 6

    def __init__(self, ratio: float, min_per_minute: int, clock=time.monotonic):
        self.ratio, self.min_per_minute, self.clock = ratio, min_per_minute, clock
        self._calls = [0] * self.BUCKETS
        self._retries = [0] * self.BUCKETS
        self._bucket = int(clock() // self.BUCKET_S)

    def _roll(self) -> int:
        bucket = int(self.clock() // self.BUCKET_S)
        for b in range(self._bucket + 1, min(bucket, self._bucket + self.BUCKETS) + 1):
            self._calls[b % self.BUCKETS] = self._retries[b % self.BUCKETS] = 0
        self._bucket = max(bucket, self._bucket)
        return bucket % self.BUCKETS

    def called(self) -> None:
        self._calls[self._roll()] += 1

    def try_retry(self) -> bool:
        """Takes one retry from the budget, if there is one."""
        i = self._roll()
        allowed = max(self.min_per_minute, self.ratio * sum(self._calls))
        if sum(self._retries) + 1 > allowed:
            return False
        self._retries[i] += 1
        return True
