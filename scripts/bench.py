"""Side-by-side benchmark behind scripts/bench.

Both proxies intercept HTTPS from one keep-alive client and reach the same fake provider over HTTPS:
  plain    mitmdump with no addons; the client calls https://127.0.0.1:<fake>/v1/chat/completions
  gateway  mitmdump -s addons/gateway.py; the client calls https://api.openai.com/v1/chat/completions with a
           gateway key; the gateway authenticates, routes, injects the org key, meters and writes the ledger.
  cache    the same gateway with the response cache on (memory store): every call after the first is a hit.
  limits   the gateway with a request limit, a token limit and a budget per consumer (never reached), counted in
           the memory store, and the same counted in a private redis-server (the cost of shared, exact limits).
Rounds alternate between the two so that machine noise hits both alike.
"""

import argparse
import json
import shutil
import ssl
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from harness import FakeLLM, Gateway, RedisServer

KEY = "tg-bench-key"
LIMITS = {"rules": [{"name": "per-consumer", "per": "consumer", "requests_per_minute": 10**9,
                     "tokens_per_minute": 10**12}]}
BUDGETS = [{"name": "daily", "usd_per_day": 10**6}]
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "benchmark me"}]}


def client_for(proxy: Gateway) -> httpx.Client:
    return httpx.Client(proxy=proxy.proxy, verify=ssl.create_default_context(cafile=proxy.ca), timeout=30,
                        headers={"authorization": f"Bearer {KEY}"})


def plain_calls(client: httpx.Client, url: str, n: int) -> dict:
    for _ in range(min(50, n)):  # warm-up: connection, TLS, caches
        client.post(url, json=BODY).raise_for_status()
    latencies = []
    start = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        client.post(url, json=BODY).raise_for_status()
        latencies.append((time.perf_counter() - t) * 1000)
    elapsed = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100)
    return {"rps": n / elapsed, "p50": statistics.median(latencies), "p99": q[98]}


def stream_calls(client: httpx.Client, url: str, n: int) -> dict:
    ttfts = []
    body = {**BODY, "stream": True}
    for _ in range(n):
        t = time.perf_counter()
        with client.stream("POST", url, json=body, headers={"x-fake-words": "20"}) as response:
            first = None
            for line in response.iter_lines():
                if first is None and '"content": "' in line and '"content": ""' not in line:
                    first = (time.perf_counter() - t) * 1000
        ttfts.append(first)
    return {"ttft_p50": statistics.median(ttfts)}


def guard_scan_ms() -> float:
    """Median time to scan a 100,000-character prompt with every detector and a keyword rule."""
    from tollgate.core.guard import DETECTORS, Rule, compile_rule, scan

    rules = (compile_rule(Rule("all", detectors=tuple(DETECTORS))),
             compile_rule(Rule("kw", keywords=("password", "secret", "confidential"))))
    text = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit 12345, see line 42 of main.py. " * 1200)[:100_000]
    times = []
    for _ in range(20):
        start = time.perf_counter()
        scan(rules, [text], "bench", "")
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="plain calls per round and proxy")
    parser.add_argument("--streams", type=int, default=100, help="streamed calls per round and proxy")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--quick", action="store_true", help="one short round (a smoke test, not a measurement)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.streams, args.rounds = 60, 6, 1
    console = Console(width=120)
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    fake = FakeLLM(work / "fake", "--tls")
    insecure = ("--set", "ssl_insecure=true", "--set", "flow_detail=0")  # the fake's certificate is self-signed
    plain = Gateway(work / "plain", {}, extra=insecure, script=False)
    gateway = Gateway(work / "gateway", {
        "providers": {"openai": {"type": "openai", "keys": ["sk-org-bench"], "upstream": fake.url}},
        "consumers": [{"name": "bench", "key": KEY}],
    }, extra=insecure)
    cached = Gateway(work / "cached", {
        "providers": {"openai": {"type": "openai", "keys": ["sk-org-bench"], "upstream": fake.url}},
        "consumers": [{"name": "bench", "key": KEY}], "cache": {"ttl": "1h"},
    }, extra=insecure)
    url = "https://api.openai.com/v1/chat/completions"
    targets = {"plain mitmdump": (plain, f"{fake.url}/v1/chat/completions"), "tollgate": (gateway, url),
               "tollgate cache hit": (cached, url)}
    redis = RedisServer(work / "redis") if shutil.which("redis-server") else None
    for store, name in (("memory", "limits, memory"), (redis.url if redis else None, "limits, redis")):
        if store is not None:
            targets[name] = (Gateway(work / name.replace(", ", "-"), {
                "providers": {"openai": {"type": "openai", "keys": ["sk-org-bench"], "upstream": fake.url}},
                "consumers": [{"name": "bench", "key": KEY}], "store": store, "limits": LIMITS, "budgets": BUDGETS,
            }, extra=insecure), url)
    results: dict[str, list[dict]] = {name: [] for name in targets}
    try:
        for round_ in range(args.rounds):
            for name, (proxy, url) in targets.items():
                with client_for(proxy) as client:
                    figures = plain_calls(client, url, args.requests) | stream_calls(client, url, args.streams)
                results[name].append(figures)
                console.print(f"round {round_ + 1} {name:15} " + "  ".join(f"{k}={v:.2f}" for k, v in figures.items()))
    finally:
        for proxy, _ in targets.values():
            proxy.stop()
        if redis:
            redis.stop()
        fake.stop()

    summary = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()}
    base = summary["plain mitmdump"]
    table = Table(title=f"median of {args.rounds} rounds: {args.requests} calls + {args.streams} streams each, "
                        "1 keep-alive client, HTTPS interception")
    for column in ("", "req/s", "p50 ms", "p99 ms", "stream TTFT p50 ms"):
        table.add_column(column, justify="right")
    for name, s in summary.items():
        table.add_row(name, f"{s['rps']:.0f}", f"{s['p50']:.2f}", f"{s['p99']:.2f}", f"{s['ttft_p50']:.2f}")
    for name in [n for n in summary if n != "plain mitmdump"]:
        ours = summary[name]
        table.add_row(f"{name} vs plain", f"{ours['rps'] / base['rps']:.0%}", f"{ours['p50'] - base['p50']:+.2f}",
                      f"{ours['p99'] - base['p99']:+.2f}", f"{ours['ttft_p50'] - base['ttft_p50']:+.2f}")
    console.print(table)
    if "limits, redis" in summary:
        extra = summary["limits, redis"]["p50"] - summary["limits, memory"]["p50"]
        console.print(f"limits: Redis instead of the memory store adds {extra:+.2f} ms p50 (target <= 0.5 ms)")
    else:
        console.print("limits: redis-server not installed, the Redis row was skipped")
    console.print(f"guard: scanning a 100,000-character prompt with every detector: {guard_scan_ms():.2f} ms (median)")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
