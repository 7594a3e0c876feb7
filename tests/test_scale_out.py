"""Scale out: scripts/run --workers 3 (three gateway processes behind HAProxy) on a private Redis Cluster and a
private PostgreSQL, driven by 40 concurrent SDK clients."""

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter

import httpx
import openai
import pytest

from conftest import ROOT, require
from harness import Workers, providers_to

KEYS = {f"c{i}": f"tg-scale-consumer-{i:02d}-0123456789" for i in range(5)}  # c3: per ip; c4: no limit
TOKENS_PER_MINUTE = 1500
HELLO = [{"role": "user", "content": "Say hello to the gateway"}]


@pytest.fixture(scope="module")
def cluster_setup(tmp_path_factory, fake, redis_cluster, postgres):
    postgres.query("DROP TABLE IF EXISTS calls")
    workdir = tmp_path_factory.mktemp("workers")
    config = {
        "providers": providers_to(fake),
        "consumers": [{"name": name, "key": key} for name, key in KEYS.items()],
        "store": redis_cluster.url,
        "ledger": {"url": postgres.url, "path": str(workdir / "usage.db")},
        "limits": {"default_max_tokens": 50, "rules": [
            {"name": "per-consumer", "per": "consumer", "tokens_per_minute": TOKENS_PER_MINUTE,
             "requests_per_minute": 1000, "consumers": ["c0", "c1", "c2"]},
            {"name": "per-ip", "per": "ip", "requests_per_minute": 5, "consumers": ["c3"]}]},
    }
    require(("haproxy",), "TOLLGATE_REQUIRE_HAPROXY")
    workers = Workers(workdir, config)
    yield workers, postgres, redis_cluster
    workers.stop()


def shared(postgres, where: str = "1=1") -> list[dict]:
    columns = [c[0] for c in postgres.query("SELECT column_name FROM information_schema.columns "
                                            "WHERE table_name = 'calls' ORDER BY ordinal_position")]
    return [dict(zip(columns, row)) for row in postgres.query(f"SELECT * FROM calls WHERE {where}")]


def client_for(workers: Workers, consumer: str) -> openai.OpenAI:
    transport = httpx.HTTPTransport(proxy=workers.proxy, verify=workers.ca, retries=0)
    return openai.OpenAI(api_key=KEYS[consumer], max_retries=4, http_client=httpx.Client(transport=transport, timeout=30))


def test_forty_clients_three_workers_one_limit_one_ledger(cluster_setup):
    workers, postgres, redis_cluster = cluster_setup
    answered, refused = Counter(), Counter()
    lock = threading.Lock()

    def client(consumer: str):
        sdk = client_for(workers, consumer).with_options(max_retries=0)  # a 429 counts as refused, not waited out
        for _ in range(4):
            try:
                sdk.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=50,
                                            extra_headers={"x-fake-words": "40"})
                with lock:
                    answered[consumer] += 1
            except openai.RateLimitError:
                with lock:
                    refused[consumer] += 1

    threads = [threading.Thread(target=client, args=(f"c{i % 3}",)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sum(answered.values()) > 0 and sum(refused.values()) > 0, (answered, refused)
    deadline = time.time() + 20
    calls = sum(answered.values()) + sum(refused.values())
    while time.time() < deadline and len(shared(postgres, "consumer IN ('c0', 'c1', 'c2')")) < calls:
        time.sleep(0.2)
    rows = shared(postgres, "consumer IN ('c0', 'c1', 'c2')")
    ok = [r for r in rows if r["status"] == 200]
    assert Counter(r["consumer"] for r in ok) == answered, "every 200 a client saw is one row in PostgreSQL"
    assert len({r["id"] for r in rows}) == len(rows)
    for consumer in answered:  # the limit held across three processes: every call reserved 50 + its prompt
        used = sum(r["prompt_tokens"] + r["completion_tokens"] for r in ok if r["consumer"] == consumer)
        assert used <= TOKENS_PER_MINUTE, (consumer, used)
    assert {r["client_ip"] for r in ok} == {"127.0.0.1"}
    out = subprocess.run([str(ROOT / "scripts" / "usage-report"), "--ledger", postgres.url, "--format", "json"],
                         capture_output=True, text=True, timeout=120, check=True)
    report = {r["consumer"]: r for r in json.loads(out.stdout)}
    for consumer, count in answered.items():
        assert report[consumer]["calls"] == count + refused[consumer]
        assert report[consumer]["limited"] == refused[consumer]
    per_node = redis_cluster.keys_per_node()
    assert sum(1 for n in per_node.values() if n) > 1, f"counters spread over the shards: {per_node}"


def test_the_client_address_survives_the_balancer(cluster_setup):
    workers, postgres, _ = cluster_setup

    def call(address: str) -> int:  # curl binds the client's own address; HAProxy's peer is 127.0.0.1
        out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--interface", address,
                              "-x", workers.proxy, "--cacert", workers.ca,
                              "https://api.openai.com/v1/chat/completions", "-H", f"authorization: Bearer {KEYS['c3']}",
                              "-H", "content-type: application/json",
                              "-d", json.dumps({"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": 10})],
                             capture_output=True, text=True, timeout=30)
        return int(out.stdout)

    assert [call("127.0.0.2") for _ in range(6)] == [200] * 5 + [429]  # per ip: 127.0.0.2 used its five
    assert call("127.0.0.3") == 200  # another address has room
    deadline = time.time() + 20
    while time.time() < deadline and len(shared(postgres, "consumer = 'c3'")) < 7:
        time.sleep(0.2)
    ips = Counter(r["client_ip"] for r in shared(postgres, "consumer = 'c3'"))
    assert ips == {"127.0.0.2": 6, "127.0.0.3": 1}, ips


def test_a_worker_killed_mid_load_loses_no_call(cluster_setup):
    workers, postgres, _ = cluster_setup
    before = len(shared(postgres))
    answered = []
    lock = threading.Lock()
    stop = threading.Event()

    def client():
        sdk = client_for(workers, "c4")
        while not stop.is_set():
            try:
                sdk.with_options(max_retries=6).chat.completions.create(
                    model="gpt-4o-mini", messages=HELLO, max_tokens=5,
                    extra_headers={"x-tollgate-cache": "bypass"})
                with lock:
                    answered.append(1)
            except openai.APIError:
                failed.append(1)

    failed = []
    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(2)
    victim = workers.worker_pids()[0]
    os.kill(victim, signal.SIGKILL)
    time.sleep(4)
    stop.set()
    for t in threads:
        t.join(60)
    assert all(not t.is_alive() for t in threads) and not failed, "every client's retries went through"
    assert "starting it again" in workers.log.read_text()
    deadline = time.time() + 30
    while time.time() < deadline and len(shared(postgres)) - before < len(answered):
        time.sleep(0.2)
    rows = shared(postgres)
    assert len(rows) - before >= len(answered), "no finished call missing"
    assert len({r["id"] for r in rows}) == len(rows), "none duplicated"
