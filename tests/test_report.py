"""scripts/usage-report on a ledger produced by real calls through the gateway."""

import csv
import io
import json
import subprocess
import sys

import openai
import pytest

from conftest import ROOT
from harness import Gateway, providers_to

HELLO = [{"role": "user", "content": "report on me"}]


@pytest.fixture(scope="module")
def ledger(tmp_path_factory, fake):
    gw = Gateway(tmp_path_factory.mktemp("report"), {
        "providers": providers_to(fake), "groups": {"a-team": {}, "b-team": {"models": ["gpt-4o-mini"]}},
        "consumers": [{"name": "alice", "key": "tg-r-alice", "group": "a-team"},
                      {"name": "bob", "key": "tg-r-bob", "group": "b-team"}],
        "cache": {"ttl": "1h"}})
    try:
        alice, bob = gw.openai("tg-r-alice"), gw.openai("tg-r-bob")
        for _ in range(2):
            alice.chat.completions.create(model="gpt-4o", messages=HELLO)  # a miss, then a hit
        alice.chat.completions.create(model="gpt-4o-mini", messages=HELLO, extra_headers={"x-fake-words": "40"})
        list(bob.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True))
        gw.anthropic("tg-r-alice").messages.create(model="claude-sonnet-4-6", max_tokens=9, messages=HELLO)
        with pytest.raises(openai.PermissionDeniedError):
            bob.chat.completions.create(model="gpt-4o", messages=HELLO)
        gw.rows_since(0, 6)
        yield gw
    finally:
        gw.stop()


def run(ledger, *args) -> str:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "usage_report.py"), "--ledger",
                           str(ledger.ledger_path), *args], capture_output=True, text=True, check=True).stdout


def test_json_totals_match_the_ledger(ledger):
    rows = json.loads(run(ledger, "--format", "json", "--by", "consumer"))
    ledger_rows = ledger.rows()
    spent = [r for r in ledger_rows if r["cache"] != "hit"]
    assert sum(r["calls"] for r in rows) == len(ledger_rows) == 6
    assert sum(r["prompt_tokens"] for r in rows) == sum(r["prompt_tokens"] for r in spent)
    assert sum(r["completion_tokens"] for r in rows) == sum(r["completion_tokens"] for r in spent)
    assert abs(sum(r["cost_usd"] for r in rows) - sum(r["cost_usd"] for r in spent)) < 1e-9
    by_name = {r["consumer"]: r for r in rows}
    assert by_name["alice"]["cache_hits"] == 1 and by_name["alice"]["saved_usd"] > 0
    assert by_name["bob"]["blocked"] == 1 and by_name["bob"]["calls"] == 2
    assert by_name["alice"]["p50_ms"] > 0


def test_csv_by_model_and_group_and_time_filters(ledger):
    rows = list(csv.DictReader(io.StringIO(run(ledger, "--format", "csv", "--by", "model"))))
    assert {r["model"] for r in rows} == {"gpt-4o", "gpt-4o-mini", "claude-sonnet-4-6"}
    assert sum(int(r["calls"]) for r in rows) == 6
    groups = json.loads(run(ledger, "--format", "json", "--by", "group"))
    assert {r["group"] for r in groups} == {"a-team", "b-team"}
    assert json.loads(run(ledger, "--format", "json", "--since", "2099-01-01")) == []
    assert sum(r["calls"] for r in json.loads(run(ledger, "--format", "json", "--since", "1h"))) == 6
    assert "alice" in run(ledger)  # the rich table


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG\r\n\x1a\n"), (".svg", b"<?xml")])
def test_chart_files(ledger, tmp_path, suffix, magic):
    chart = tmp_path / f"usage{suffix}"
    run(ledger, "--format", "json", "--chart", str(chart))
    data = chart.read_bytes()
    assert data.startswith(magic) and len(data) > 10_000
    if suffix == ".svg":
        assert b"<svg" in data and b"alice" in data


def test_finance_grade_output(ledger):
    rows = list(csv.DictReader(io.StringIO(run(ledger, "--format", "csv", "--by", "consumer"))))
    for row in rows:  # exact decimals: no float noise, no scientific notation
        for column in ("cost_usd", "saved_usd"):
            assert len(row[column].split(".")[1]) == 6 and "e" not in row[column]
    alice = next(r for r in rows if r["consumer"] == "alice")
    assert float(alice["saved_usd"]) > 0 and alice["cache_hits"] == "1"
    table = run(ledger)
    assert "(UTC)" in table and "the first call to now" in table
    days = json.loads(run(ledger, "--format", "json", "--by", "day", "--tz", "Asia/Tokyo"))
    assert [r["day"] for r in days] == sorted(r["day"] for r in days)
    assert "Asia/Tokyo" in run(ledger, "--by", "day", "--tz", "Asia/Tokyo")


def test_bad_input_is_an_argparse_error_and_the_config_names_the_ledger(ledger):
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "usage_report.py"), "--ledger",
                          str(ledger.ledger_path), "--since", "last tuesday"], capture_output=True, text=True)
    assert bad.returncode == 2 and "is no date" in bad.stderr and "Traceback" not in bad.stderr
    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "usage_report.py"), "--tz", "Mars/Olympus"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "is no time zone" in bad.stderr
    by_config = subprocess.run([sys.executable, str(ROOT / "scripts" / "usage_report.py"), "--config",
                                str(ledger.config_path), "--format", "json"], capture_output=True, text=True, check=True)
    assert sum(r["calls"] for r in json.loads(by_config.stdout)) == 6
