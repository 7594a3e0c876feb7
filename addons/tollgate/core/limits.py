"""Rate limits and budgets on plain data: which limits apply to a call, what it reserves, and what a counter's
state means for the client (remaining, reset, retry-after).

Counters are sliding windows of SLOTS slots each (a minute: 60 one-second slots). Admission sums every slot that
overlaps the last window, including the oldest, partly expired one, and admits a call only if that sum plus the
call's reservation stays within the limit. So in every window of the rule's length, the reservations admitted
never exceed the limit: no double burst at window edges (a slot's worth of capacity may return up to one slot late).
Budgets are calendar periods (UTC day or month): one counter per period.

A call reserves its worst case (estimated prompt + max output tokens, priced for budgets) and settles to its actual
usage when it ends. Hence the bound stated in the README: within any window, admitted usage <= limit + the sum,
over calls in flight at the last admission, of max(0, actual - reserved); with max output tokens given (or the
default) and the prompt estimate at or above the provider's count, that excess is zero."""

from __future__ import annotations

import calendar
import functools
import hashlib
import ipaddress
import math
import re
from dataclasses import dataclass
from typing import NamedTuple
from datetime import datetime, timezone
from fnmatch import fnmatchcase

from . import tokens
from .realtime import is_realtime
from .schema import (ConfigError, choice, count, error_status, known_names, list_of, mapping, parse_duration,
                     patterns, string, unique)

SLOTS = 60
QUICK_BOUND_CHARS = 128  # shorter prompt pieces reserve a token per byte (at most ~100 tokens more than counted)
KINDS = ("requests", "tokens", "usd")
PERS = ("global", "consumer", "group", "ip", "model")  # and header:NAME


@dataclass(frozen=True)
class Limit:
    rule: str                       # the configured rule's name (ledger, messages)
    kind: str                       # requests | tokens | usd (micro-dollars)
    amount: int
    window_s: float = 0.0           # sliding window; 0 for budgets
    period: str = ""                # budgets: day | month
    per: str = "global"             # global | consumer | group | ip | model | header:NAME
    models: tuple[str, ...] | None = None   # subset: model globs
    consumers: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    networks: tuple = ()            # subset: client IP networks (ipaddress)
    values: tuple[str, ...] = ()    # subset: globs on the `per` value (header value, consumer name, ...)
    status: int = 429
    message: str = ""
    index: int = 0                  # position among the limits of one rule (distinct counters)

    @functools.cached_property  # read several times per call: computed once per limit
    def slot_ms(self) -> int:
        return max(1, round(self.window_s * 1000 / SLOTS)) if self.window_s else 0

    @functools.cached_property
    def slots(self) -> int:
        return math.ceil(self.window_s * 1000 / self.slot_ms) if self.window_s else 0

    def describe(self) -> str:
        amount = f"${self.amount / 1e6:g}" if self.kind == "usd" else f"{self.amount} {self.kind}"
        return f"{amount} per {self.period}" if self.period else f"{amount} per {format_duration(self.window_s * 1000)}"


class Call(NamedTuple):  # made on every call: a tuple costs less than a frozen dataclass
    """What limits look at: plain facts about one call."""
    consumer: str
    group: str
    ip: str
    model: str
    headers: dict


def subject(limit: Limit, call: Call) -> str | None:
    """The value this call is counted under for the limit, or None if the limit does not apply to it."""
    if limit.models is not None and not any(fnmatchcase(call.model, m) for m in limit.models):
        return None
    if (limit.consumers or limit.groups) and call.consumer not in limit.consumers and call.group not in limit.groups:
        return None
    ip = call.ip
    if limit.per.startswith("ip-header:"):  # Higress's limit_by_per_ip: from-header-NAME (first address listed)
        ip = call.headers.get(limit.per[10:], "").split(",")[0].strip()
        if not ip:
            return None
    if limit.networks and not _in_networks(ip, limit.networks):
        return None
    if limit.per == "global":
        value = ""
    elif limit.per.startswith("header:"):
        value = call.headers.get(limit.per[7:], "")
        if not value:
            return None  # no header, no counter: the rule is about callers that send it
    elif limit.per.startswith("ip-header:"):
        value = ip
    else:
        value = {"consumer": call.consumer, "group": call.group, "ip": call.ip, "model": call.model}[limit.per]
        if not value:
            return None
    if limit.values and not any(fnmatchcase(value, v) for v in limit.values):
        return None
    return value


def _in_networks(ip: str, networks) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    return any(address.version == n.version and address in n for n in networks)


def counter_key(limit: Limit, value: str, now: float) -> str:
    """Store key of one counter. No hash tag: on a Redis Cluster the counters of different consumers and rules
    spread over the shards (a call's counters in several slots are reserved as core/store.py's
    RedisClusterStore describes). A value with braces is hashed, so no client can make a hash tag."""
    if len(value) > 64 or any(c in value for c in "{}"):
        value = "#" + hashlib.sha256(value.encode()).hexdigest()[:32]
    name = f"{limit.rule}:{limit.index}:{limit.kind}:{value}"
    if limit.period:
        return f"tollgate:budget:{name}:{period_id(limit.period, now)}"
    return f"tollgate:limit:{name}"


def period_id(period: str, now: float) -> str:
    return _period(period, int(now // 86400))[0]


def period_left_s(period: str, now: float) -> float:
    return _period(period, int(now // 86400))[1] - now


@functools.lru_cache(maxsize=16)  # one entry per period and UTC day: a call asks twice, the date math runs once a day
def _period(period: str, day: int) -> tuple[str, float]:
    """(id, end as epoch seconds) of the day or month (UTC) that contains the given day number."""
    t = datetime.fromtimestamp(day * 86400, timezone.utc)
    if period == "day":
        return t.strftime("%Y-%m-%d"), (day + 1) * 86400.0
    days = calendar.monthrange(t.year, t.month)[1]
    return t.strftime("%Y-%m"), datetime(t.year, t.month, 1, tzinfo=timezone.utc).timestamp() + days * 86400


def ttl_ms(limit: Limit, now: float) -> int:
    if limit.period:
        return int((period_left_s(limit.period, now) + 3600) * 1000)
    return (limit.slots + 2) * limit.slot_ms


def max_output_tokens(endpoint: str, body: dict | None, default: int) -> int:
    """The most output a request can cost: its own cap if it gives one, else the configured default."""
    if "embeddings" in endpoint or "count_tokens" in endpoint:
        return 0
    body = body if isinstance(body, dict) else {}
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        if isinstance(body.get(key), int) and body[key] >= 0:
            return body[key]
    config = body.get("generationConfig")
    if isinstance(config, dict) and isinstance(config.get("maxOutputTokens"), int):
        return config["maxOutputTokens"]
    return default


def reservation(endpoint: str, model: str, body: dict | None, default_max: int) -> tuple[int, int]:
    """(prompt tokens estimated, output tokens at most) of a request: its worst case. CPU-bound for big prompts.
    A realtime handshake spends nothing itself: each response of its session is reserved on its own."""
    if is_realtime(endpoint):
        return 0, 0
    return tokens.estimate_prompt(model, body, bound_below=QUICK_BOUND_CHARS), max_output_tokens(endpoint, body,
                                                                                                  default_max)


class Counter(NamedTuple):  # a tuple: made three times a call (a frozen dataclass costs five times more)
    """One counter a call is charged to, as the store sees it."""
    key: str
    limit: int
    cost: int
    slot_ms: int
    slots: int
    ttl_ms: int


def counter(limit: Limit, key: str, cost: int, now: float) -> Counter:
    return Counter(key, limit.amount, cost, limit.slot_ms, limit.slots, ttl_ms(limit, now))


class WindowState(NamedTuple):  # a tuple: three a call
    """A counter as the store saw it for one call: whether it had room, the store's clock, the slot charged, the
    amount used (including this call's reservation when the call was admitted), the newest slot holding usage (-1:
    none), and when refused, the oldest slot whose expiry makes room for the call (None: no slot does)."""
    admitted: bool
    now_ms: int
    slot: int
    used: int
    newest: int = -1
    free_slot: int | None = None


def window_state(admitted: bool, now_ms: int, slot: int, counts: dict[int, int], limit: int, cost: int) -> WindowState:
    """The state of a counter from its live slots (counts include the reservation when admitted)."""
    used = sum(counts.values())
    newest = max(counts, default=-1)
    if newest >= 0 and counts[newest] <= 0:  # settled down to nothing: the newest slot that holds usage
        newest = max((s for s, n in counts.items() if n > 0), default=-1)
    free_slot, need, freed = None, used + cost - limit, 0
    if not admitted:
        for s in sorted(counts):
            freed += counts[s]
            if freed >= need:
                free_slot = s
                break
    return WindowState(admitted, now_ms, slot, used, newest, free_slot)


def remaining(limit: Limit, state: WindowState) -> int:
    return max(0, limit.amount - max(0, state.used))


def reset_ms(limit: Limit, state: WindowState, now: float) -> int:
    """Until the counter is back to its full amount."""
    if limit.period:
        return int(period_left_s(limit.period, now) * 1000)
    if state.used <= 0 or state.newest < 0:
        return 0
    return max(0, (state.newest + limit.slots + 1) * limit.slot_ms - state.now_ms)


def retry_after_ms(limit: Limit, state: WindowState, cost: int, now: float) -> int | None:
    """Until a refused call of this cost would be admitted (if nothing else is); None if it never will be."""
    if cost > limit.amount:
        return None
    if limit.period:
        return int(period_left_s(limit.period, now) * 1000)
    if state.free_slot is None:
        return limit.slot_ms
    return max(1, (state.free_slot + limit.slots + 1) * limit.slot_ms - state.now_ms)


def format_duration(ms: float) -> str:
    """OpenAI's style for x-ratelimit-reset-*: 250ms, 12s, 1m30s, 2h0m5s."""
    if ms < 1000:
        return f"{int(ms)}ms"
    seconds = ms / 1000
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    text = f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    if hours >= 1:
        return f"{int(hours)}h{int(minutes)}m{text}"
    return f"{int(minutes)}m{text}" if minutes >= 1 else text


def rate_headers(states: list[tuple[Limit, WindowState]], now: float) -> dict[str, str]:
    """x-ratelimit-* for the tightest request rule and the tightest token rule (the least remaining)."""
    headers = {}
    for kind in ("requests", "tokens"):
        mine = [(limit, state) for limit, state in states if limit.kind == kind and not limit.period]
        if not mine:
            continue
        limit, state = mine[0] if len(mine) == 1 else min(
            mine, key=lambda pair: (remaining(*pair), -reset_ms(pair[0], pair[1], now)))
        headers[f"x-ratelimit-limit-{kind}"] = str(limit.amount)
        headers[f"x-ratelimit-remaining-{kind}"] = str(remaining(limit, state))
        headers[f"x-ratelimit-reset-{kind}"] = format_duration(reset_ms(limit, state, now))
    return headers


@dataclass(frozen=True)
class LimitsConfig:
    limits: tuple = ()                # core.limits.Limit: rate limits, then budgets
    on_store_error: str = "open"      # open: serve uncounted while the store is down | closed: 503
    default_max_tokens: int = 4096    # reserved for output when a request gives no max_tokens
    cache_hits: str = "requests"      # what a cache hit counts against: requests | all | none

    PLANS = 4096  # remembered (consumer, group, ip, model, day) combinations; all forgotten when full

    @functools.cached_property
    def _plans(self) -> dict:
        return {}

    @functools.cached_property
    def _by_header(self) -> bool:
        return any(limit.per.startswith(("header:", "ip-header:")) for limit in self.limits)

    def applicable(self, call: Call, now: float) -> list[tuple[Limit, str, str]]:
        """(limit, counter key, subject value) of every limit that applies to the call. The same facts give the
        same answer all day (budget keys name the day's period), so it is remembered unless a limit reads headers."""
        if self._by_header:
            return _applicable(self.limits, call, now)
        fact = (call.consumer, call.group, call.ip, call.model, int(now // 86400))
        if (plan := self._plans.get(fact)) is None:
            if len(self._plans) >= self.PLANS:
                self._plans.clear()
            plan = self._plans[fact] = _applicable(self.limits, call, now)
        return plan


def _applicable(limits: tuple, call: Call, now: float) -> list[tuple[Limit, str, str]]:
    return [(limit, counter_key(limit, value, now), value) for limit in limits
            if (value := subject(limit, call)) is not None]


_AMOUNT_KEY = re.compile(r"^(requests?|query|queries|tokens?)_per_(second|minute|hour|day)$")


_WINDOW_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}


_PER_ALIASES = {"limit_by_per_ip": "ip", "limit_by_per_consumer": "consumer", "limit_by_per_group": "group",
                "limit_by_per_model": "model"}


def _with_amounts(node, keys: set[str]) -> set[str]:
    """The keys a limit rule may have: `keys` and amounts such as token_per_minute."""
    return keys | {k for k in node if _AMOUNT_KEY.match(str(k))} if isinstance(node, dict) else keys


def _amounts(node: dict, path: str) -> list[tuple[str, int, float]]:
    """(kind, amount, window) pairs: `requests`/`tokens` with `window`, and keys like token_per_minute."""
    found = []
    window = parse_duration(node["window"], f"{path}.window") if "window" in node else 60.0
    if window < 1:
        raise ConfigError(f"{path}.window: at least 1s, got {node['window']!r}")
    for kind in ("requests", "tokens"):
        if kind in node:
            found.append((kind, count(node[kind], f"{path}.{kind}"), window))
    for key, value in node.items():
        if m := _AMOUNT_KEY.match(str(key)):
            kind = "tokens" if m[1].startswith("token") else "requests"
            found.append((kind, count(value, f"{path}.{key}"), float(_WINDOW_S[m[2]])))
    return found


def _subset(node: dict, path: str, groups: dict, consumer_names: set[str]) -> dict:
    known_names(node, path, groups, consumer_names)
    networks = []
    for j, cidr in enumerate(patterns(node, "ips", path) or ()):
        try:
            networks.append(ipaddress.ip_network(cidr, strict=False))
        except ValueError:
            raise ConfigError(f"{path}.ips[{j}]: not an IP address or CIDR network: {cidr!r}") from None
    return {"models": patterns(node, "models", path), "consumers": patterns(node, "consumers", path) or (),
            "groups": patterns(node, "groups", path) or (), "networks": tuple(networks)}


def _per(node: dict, path: str) -> str:
    pers = [v for k, v in _PER_ALIASES.items() if k in node and k != "limit_by_per_ip"]
    if "limit_by_per_ip" in node:  # Higress: from-remote-addr, or from-header-NAME (the client IP a balancer adds)
        source = string(node["limit_by_per_ip"], f"{path}.limit_by_per_ip").lower()
        if source == "from-remote-addr":
            pers.append("ip")
        elif m := re.fullmatch(r"from-header-([a-z0-9-]+)", source):
            pers.append("ip-header:" + m[1])
        else:
            raise ConfigError(f"{path}.limit_by_per_ip: expected from-remote-addr or from-header-NAME (e.g. "
                              f"from-header-x-real-ip), got {node['limit_by_per_ip']!r}")
    if "limit_by_per_header" in node:
        pers.append("header:" + string(node["limit_by_per_header"], f"{path}.limit_by_per_header").lower())
    if "per" in node:
        per = string(node["per"], f"{path}.per").lower()
        if per not in ("global", "consumer", "group", "ip", "model") and not re.fullmatch(r"header:[a-z0-9-]+", per):
            raise ConfigError(f"{path}.per: expected global, consumer, group, ip, model or header:NAME, got {per!r}")
        pers.append(per)
    if len(pers) > 1:
        raise ConfigError(f"{path}: give one of per / limit_by_per_*")
    return pers[0] if pers else "global"


def parse_limits(node, budgets, groups: dict, consumer_names: set[str]) -> LimitsConfig:
    node = mapping(node, "limits", {"rules", "on_store_error", "default_max_tokens", "cache_hits"})
    limits, names = [], set()
    base_keys = {f"{kind}_per_{unit}" for kind in ("requests", "tokens") for unit in _WINDOW_S} | {
                 "name", "per", "limit_by_per_ip", "limit_by_per_consumer", "limit_by_per_group",
                 "limit_by_per_model", "limit_by_per_header", "limit_keys", "models", "consumers", "groups", "ips",
                 "requests", "tokens", "window", "rejected_code", "rejected_msg"}
    for i, rule in enumerate(list_of(node.get("rules"), "limits.rules")):
        path = f"limits.rules[{i}]"
        rule = mapping(rule, path, _with_amounts(rule, base_keys))
        name = unique(string(rule.get("name"), f"{path}.name"), names, f"{path}.name")
        per = _per(rule, path)
        status = error_status(rule.get("rejected_code", 429), f"{path}.rejected_code")
        common = dict(rule=name, per=per, status=status, **_subset(rule, path, groups, consumer_names),
                      message=string(rule.get("rejected_msg"), f"{path}.rejected_msg", required=False))
        # limit_keys (the seed's shape): each entry is a subset of its own (an IP network, or a value of `per`)
        entries = [(path, rule, {})]
        for j, entry in enumerate(list_of(rule.get("limit_keys"), f"{path}.limit_keys")):
            where = f"{path}.limit_keys[{j}]"
            entry = mapping(entry, where, _with_amounts(entry, {"key", "requests", "tokens", "window"}))
            key = string(entry.get("key"), f"{where}.key")
            if per == "ip" or per.startswith("ip-header:"):
                try:
                    entries.append((where, entry, {"networks": (ipaddress.ip_network(key, strict=False),)}))
                except ValueError:
                    raise ConfigError(f"{where}.key: not an IP address or CIDR network: {key!r}") from None
            else:
                entries.append((where, entry, {"values": (key,)}))
        produced = 0
        for where, source, subset in entries:
            for kind, amount, window in _amounts(source, where):
                limits.append(Limit(kind=kind, amount=amount, window_s=window, index=produced,
                                    **{**common, **subset}))
                produced += 1
        if not produced:
            raise ConfigError(f"{path}: give requests or tokens (with window), or e.g. token_per_minute")
    for i, rule in enumerate(list_of(budgets, "budgets")):
        path = f"budgets[{i}]"
        rule = mapping(rule, path, {"name", "per", "usd_per_day", "usd_per_month", "models", "consumers", "groups",
                                    "rejected_msg"})
        name = unique(string(rule.get("name"), f"{path}.name"), names, f"{path}.name")
        per = choice(rule.get("per", "consumer"), f"{path}.per", ("consumer", "group", "global"))
        periods = [p for p in ("day", "month") if f"usd_per_{p}" in rule]
        if not periods:
            raise ConfigError(f"{path}: give usd_per_day or usd_per_month")
        for index, period in enumerate(periods):
            usd = rule[f"usd_per_{period}"]
            if not isinstance(usd, (int, float)) or isinstance(usd, bool) or usd <= 0:
                raise ConfigError(f"{path}.usd_per_{period}: expected a positive amount of dollars, got {usd!r}")
            limits.append(Limit(rule=name, kind="usd", amount=round(usd * 1e6), period=period, per=per, index=index,
                                message=string(rule.get("rejected_msg"), f"{path}.rejected_msg", required=False),
                                **_subset(rule, path, groups, consumer_names)))
    default_max = node.get("default_max_tokens", 4096)
    return LimitsConfig(
        limits=tuple(limits),
        on_store_error=choice(node.get("on_store_error", "open"), "limits.on_store_error", ("open", "closed")),
        default_max_tokens=count(default_max, "limits.default_max_tokens"),
        cache_hits=choice(node.get("cache_hits", "requests"), "limits.cache_hits", ("requests", "all", "none")),
    )
