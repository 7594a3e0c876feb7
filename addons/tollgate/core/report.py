"""Usage report on the ledger: per consumer, group, model, provider or day. Plain data in, rows out."""

from __future__ import annotations

import sqlite3
import statistics
from collections import defaultdict
from datetime import datetime, timedelta, timezone, tzinfo

GROUPINGS = {
    "consumer": "consumer",
    "group": "\"group\"",
    "model": "COALESCE(NULLIF(model, ''), requested_model)",
    "provider": "provider",
    "day": "started_at",  # bucketed into dates in the report's time zone
}
COLUMNS = ("calls", "prompt_tokens", "completion_tokens", "cost_usd", "cache_hits", "saved_usd", "blocked",
           "limited", "errors", "unpriced", "p50_ms", "p95_ms")  # unpriced: calls charged at the `default` price


def parse_when(text: str, now: datetime | None = None, tz: tzinfo = timezone.utc) -> float:
    """'2026-11-01', an ISO date-time (in tz unless it names its own offset), or relative: '7d', '12h', '30m' ago.
    Returns epoch seconds; ValueError for anything else."""
    now = now or datetime.now(timezone.utc)
    units = {"d": "days", "h": "hours", "m": "minutes"}
    if text and text[-1] in units and text[:-1].isdigit():
        return (now - timedelta(**{units[text[-1]]: int(text[:-1])})).timestamp()
    when = datetime.fromisoformat(text)
    return (when if when.tzinfo else when.replace(tzinfo=tz)).timestamp()


def _percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def _window(since: float | None, until: float | None, *conditions: str) -> tuple[str, list]:
    """A WHERE clause for a time window (and any extra conditions) with its arguments."""
    where, args = ["1=1", *conditions], []
    for bound, op in ((since, ">="), (until, "<")):
        if bound is not None:
            where.append(f"started_at {op} ?")
            args.append(bound)
    return " AND ".join(where), args


def report(db: sqlite3.Connection, by: str, since: float | None = None, until: float | None = None,
           tz: tzinfo = timezone.utc) -> list[dict]:
    """One row per group, biggest spender first (`day`: by date, in time zone tz). Cache hits count as calls and as
    money saved, never as spend."""
    where, args = _window(since, until)
    saved, priced_by = _optional(db, "saved_usd", "0"), _optional(db, "priced_by", "''")
    sql = (f"SELECT {GROUPINGS[by]} AS key, prompt_tokens, completion_tokens, cost_usd, {saved}, cache, decision, "
           f"status, latency_ms, {priced_by} FROM calls WHERE {where}")
    groups: dict[str, dict] = defaultdict(lambda: {c: 0 for c in COLUMNS} | {"_latency": []})
    for key, prompt, completion, cost, saved_usd, cache, decision, status, latency, priced in db.execute(sql, args):
        if by == "day":
            key = datetime.fromtimestamp(key, tz).strftime("%Y-%m-%d")
        g = groups[key or "-"]
        g["calls"] += 1
        if cache == "hit":
            g["cache_hits"] += 1
            g["saved_usd"] += saved_usd or cost or 0  # rows written before saved_usd kept the saving in cost_usd
            continue
        g["prompt_tokens"] += prompt or 0
        g["completion_tokens"] += completion or 0
        g["cost_usd"] += cost or 0
        g["unpriced"] += priced == "default"
        if decision in ("limited", "over_budget"):
            g["limited"] += 1
        elif decision == "rejected":
            g["blocked"] += 1
        elif decision in ("upstream_error", "upstream_timeout") or (status or 0) >= 500:
            g["errors"] += 1
        elif latency is not None:
            g["_latency"].append(latency)
    rows = []
    for key, g in groups.items():
        latencies = g.pop("_latency")
        g["p50_ms"], g["p95_ms"] = _percentile(latencies, 50), _percentile(latencies, 95)
        g["cost_usd"], g["saved_usd"] = round(g["cost_usd"], 8), round(g["saved_usd"], 8)
        rows.append({by: key, **g})
    if by == "day":
        return sorted(rows, key=lambda r: r["day"])
    return sorted(rows, key=lambda r: (-r["cost_usd"], -r["calls"], str(r[by])))


def _optional(db: sqlite3.Connection, column: str, otherwise: str) -> str:
    """A column a ledger written by an older version may lack."""
    return column if column in {r[1] for r in db.execute("PRAGMA table_info(calls)")} else otherwise


def unpriced_models(db: sqlite3.Connection, since: float | None = None, until: float | None = None) -> dict[str, int]:
    """model -> calls charged at the `default` price (neither config/prices.yaml nor the catalogue knew it)."""
    if _optional(db, "priced_by", "") == "":
        return {}
    where, args = _window(since, until, "priced_by = 'default'")
    sql = f"SELECT COALESCE(NULLIF(model, ''), requested_model, '-'), COUNT(*) FROM calls WHERE {where} GROUP BY 1"
    return dict(sorted(db.execute(sql, args), key=lambda item: -item[1]))


def over_time(db: sqlite3.Connection, metric: str = "cost", since: float | None = None, until: float | None = None,
              tz: tzinfo = timezone.utc, hourly: bool = False) -> dict[str, dict[str, float]]:
    """model -> {day (or hour) in tz -> spend in USD, or tokens}; cache hits spend nothing and are left out, and so
    are models with nothing to show."""
    where, args = _window(since, until, "COALESCE(cache, '') != 'hit'")
    value = "cost_usd" if metric == "cost" else "prompt_tokens + completion_tokens"
    sql = f"SELECT COALESCE(NULLIF(model, ''), requested_model, '-'), started_at, {value} FROM calls WHERE {where}"
    shape = "%Y-%m-%d %H:00" if hourly else "%Y-%m-%d"
    series: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for model, started, amount in db.execute(sql, args):
        if amount:
            series[model or "-"][datetime.fromtimestamp(started, tz).strftime(shape)] += amount
    return {model: dict(points) for model, points in series.items()}
