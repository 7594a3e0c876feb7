"""The shared ledger in PostgreSQL: rows shipped from each gateway's SQLite outbox, an outage that slows nothing and
drains after, a replica killed with kill -9 that loses and duplicates nothing, and the usage report on it."""

import json
import os
import signal
import subprocess
import threading
import time

import httpx
import pytest

from conftest import ALICE_KEY, ROOT
from harness import Gateway, free_port, providers_to  # noqa: F401

HELLO = [{"role": "user", "content": "Say hello to the gateway"}]


def config(fake, postgres, path) -> dict:
    return {"providers": providers_to(fake), "consumers": [{"name": "alice", "key": ALICE_KEY}],
            "ledger": {"url": postgres.url.replace("postgres@", "postgres:${PGPASS}@"), "path": str(path)}}


def shared_ids(postgres) -> list[str]:
    if not postgres.query("SELECT to_regclass('calls')")[0][0]:
        return []  # the gateway has not created its table yet
    return [r[0] for r in postgres.query("SELECT id FROM calls")]


class Load:
    """Clients calling through the gateway until stopped; the ids of the calls that answered 200."""

    def __init__(self, gw: Gateway, clients: int = 4):
        self.gw, self.ok, self.failed, self._stop = gw, [], 0, threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(gw.openai(ALICE_KEY),)) for _ in range(clients)]

    def _run(self, client) -> None:
        while not self._stop.is_set():
            try:
                raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=HELLO)
                self.ok.append(raw.parse().id)
            except Exception:
                self.failed += 1
                time.sleep(0.05)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self.threads:
            t.join(30)


@pytest.fixture
def clean(postgres):
    postgres.query("DROP TABLE IF EXISTS calls")
    yield postgres


def test_rows_reach_the_shared_ledger_and_the_report_reads_it(clean, fake, make_gateway, tmp_path):
    postgres = clean
    gw = make_gateway(config(fake, postgres, tmp_path / "outbox.db"), env={"PGPASS": "unused-with-trust"})
    client = gw.openai(ALICE_KEY)
    for _ in range(5):
        client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    local = gw.rows_since(0, 5)
    gw.wait_for(lambda: sorted(shared_ids(postgres)) == sorted(r["id"] for r in local), timeout=10)
    row = dict(zip([c[0] for c in postgres.query(
        "SELECT column_name, ordinal_position FROM information_schema.columns WHERE table_name = 'calls' "
        "ORDER BY ordinal_position")], postgres.query("SELECT * FROM calls ORDER BY started_at DESC LIMIT 1")[0]))
    assert row["consumer"] == "alice" and row["completion_tokens"] == local[-1]["completion_tokens"]
    assert "unused-with-trust" not in gw.logs() and "shipping the ledger to postgresql://postgres:***@" in gw.logs()
    out = subprocess.run([str(ROOT / "scripts" / "usage-report"), "--ledger", postgres.url, "--format", "json"],
                         capture_output=True, text=True, timeout=120, check=True)
    report = {r["consumer"]: r for r in json.loads(out.stdout)}
    assert report["alice"]["calls"] == 5
    assert report["alice"]["completion_tokens"] == sum(r["completion_tokens"] for r in local)
    # the default is the configuration's shared ledger (its ${VAR}s expanded)
    out = subprocess.run([str(ROOT / "scripts" / "usage-report"), "--config", str(gw.config_path), "--format", "json"],
                         capture_output=True, text=True, timeout=120, check=True,
                         env={**os.environ, "PGPASS": "unused-with-trust"})
    assert {r["consumer"]: r["calls"] for r in json.loads(out.stdout)} == {"alice": 5}


def test_an_outage_slows_nothing_and_the_backlog_drains(clean, fake, make_gateway, tmp_path):
    postgres = clean
    metrics = free_port()
    gw = make_gateway(config(fake, postgres, tmp_path / "outbox.db"), env={"PGPASS": "x"},
                      extra=("--set", f"tollgate_metrics_port={metrics}"))

    def backlog() -> float:
        text = httpx.get(f"http://127.0.0.1:{metrics}/metrics", trust_env=False).text
        return float(next(line.split()[-1] for line in text.splitlines()
                          if line.startswith("tollgate_ledger_backlog_rows ")))

    with Load(gw) as load:
        time.sleep(1)
        postgres.stop()
        down_at = len(load.ok)
        time.sleep(10)
        during = len(load.ok) - down_at
        peak = backlog()
        postgres.start()
        time.sleep(1)
    assert load.failed == 0 and during > 50, "calls keep flowing while PostgreSQL is down"
    assert peak >= during * 0.5, "the backlog shows the rows that wait"
    assert "the shared ledger (postgresql://postgres:***@" in gw.logs()
    gw.wait_for(lambda: backlog() == 0, timeout=30)
    shipped = set(shared_ids(postgres))
    assert shipped == {r["id"] for r in gw.rows()}, "every row, once"
    assert postgres.query("SELECT COUNT(*) FROM calls WHERE status = 200")[0][0] == len(load.ok)
    assert "reachable again" in gw.logs()


def test_a_replica_killed_mid_load_loses_and_duplicates_nothing(clean, fake, make_gateway, tmp_path):
    postgres = clean
    outbox = tmp_path / "outbox.db"
    gw = make_gateway(config(fake, postgres, outbox), env={"PGPASS": "x"})
    with Load(gw, clients=6) as load:
        time.sleep(2)
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait(10)
    # The same outbox on restart: what the killed gateway's journal held goes in first, then everything is shipped.
    gw = make_gateway(config(fake, postgres, outbox), env={"PGPASS": "x"})
    committed = {r["id"] for r in gw.rows()}
    assert len(load.ok) > 10 and len(committed) >= len(load.ok), "every answer the clients got has its row"
    gw.wait_for(lambda: set(shared_ids(postgres)) >= committed, timeout=20)
    ids = shared_ids(postgres)
    assert len(ids) == len(set(ids)) == len(committed)
