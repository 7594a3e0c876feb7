"""scripts/usage-report on a ledger produced by real calls through the gateway."""

import csv
import io
import json
import re
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


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    """30 days of 20 consumers on 10 models, one model only ever served from the cache, a few unpriced calls."""
    from tollgate.core.ledger import LedgerDB
    from tollgate.core.record import CallRecord

    path = tmp_path_factory.mktemp("month") / "usage.db"
    db, start, n = LedgerDB(str(path)), 1_790_000_000, 0
    for day in range(30):
        for c in range(20):
            for m in range(10):
                n += 1
                record = CallRecord(id=f"c{n}", started_at=start + day * 86400 + c * 60 + m, client_ip="10.0.0.1",
                                    dialect="openai", endpoint="/v1/chat/completions",
                                    consumer=f"consumer-with-a-long-name-{c:02d}", provider="openai",
                                    model=f"model-{m}", prompt_tokens=1000, completion_tokens=100,
                                    cost_usd=0.001 * (c + 1) * (m + 1), priced_by="catalog")
                if m == 9:
                    record.model, record.cache, record.decision = "only-cached", "hit", "cached"
                    record.cost_usd, record.saved_usd = 0.0, 0.01
                if day == 0 and c == 0 and m == 0:
                    record.model, record.priced_by = "mystery-model", "default"
                db.write(record.row())
    db.close()
    return path


def overlapping(boxes) -> bool:
    boxes = sorted(boxes, key=lambda b: (b.x0, b.y0))
    return any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_a_month_of_twenty_consumers_stays_readable(month):
    import sqlite3
    from datetime import timezone

    import usage_report

    db = sqlite3.connect(month)
    fig = usage_report.chart(db, None, None, timezone.utc, "cost", "a month")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    consumers, over_time = fig.axes
    names = [t for t in consumers.get_yticklabels() if t.get_text()]
    dates = [t for t in over_time.get_xticklabels() if t.get_text()]
    assert len(names) == 20 and 6 <= len(dates) <= 12          # every consumer, dates thinned out
    assert not overlapping([t.get_window_extent(renderer) for t in names])
    assert not overlapping([t.get_window_extent(renderer) for t in dates])
    # ranked: the biggest spender on top, each bar says its amount, the title the total
    assert names[-1].get_text().endswith("-19") and names[0].get_text().endswith("-00")
    amounts = [t.get_text() for t in consumers.texts]
    assert len(amounts) == 20 and all(a.startswith("$") for a in amounts)
    spent = db.execute("SELECT SUM(cost_usd) FROM calls").fetchone()[0]
    assert f"total ${spent:,.2f}" in consumers.get_title(loc="left")
    # spend (not tokens) over time; the legend sits beside the bars, and a model that spent nothing is not in it
    legend = over_time.get_legend()
    entries = [t.get_text() for t in legend.get_texts()]
    assert "only-cached" not in entries and len(entries) == 7 and entries[0] == "4 others"
    assert not legend.get_window_extent(renderer).overlaps(over_time.get_window_extent(renderer))
    assert over_time.get_yticklabels()[1].get_text().startswith("$")


def test_html_report_is_one_self_contained_page(month):
    page = subprocess.run([sys.executable, str(ROOT / "scripts" / "usage_report.py"), "--ledger", str(month),
                           "--format", "html"], capture_output=True, text=True, check=True).stdout
    assert page.startswith("<!doctype html>") and "<svg" in page and page.count("<tr>") == 21  # 20 + header
    assert not re.findall(r'(?:src|href)="(?!#)', page) and "<script" not in page  # nothing fetched
    assert "the first call to now (UTC)" in page and "consumer-with-a-long-name-19" in page
    assert "1 calls were charged at the default price" in page and "mystery-model" in page


def test_unpriced_calls_are_flagged(month):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "usage_report.py"), "--ledger", str(month),
                          "--format", "json", "--by", "model"], capture_output=True, text=True, check=True)
    assert {r["model"]: r["unpriced"] for r in json.loads(out.stdout)}["mystery-model"] == 1
    assert "charged at the default price" in out.stderr and "mystery-model" in out.stderr


def test_names_are_printed_as_written_in_charts():
    """Consumer and model names come from configurations and clients: a name with dollar signs is no formula."""
    import report_charts

    fig = report_charts.figure([("a$b$c", 2.0), ("x^2_y", 1.0)], {"m$1$": {"2026-11-01": 1.0}}, "cost", "t")
    fig.canvas.draw()  # would raise on a malformed formula
    consumers, over_time = fig.axes
    assert [t.get_text() for t in consumers.get_yticklabels()] == [r"x^2_y", r"a\$b\$c"]
    report_charts.save(fig, "/dev/null")


def test_csv_quotes_what_a_spreadsheet_would_run(tmp_path):
    """A client picks the model name it sends; the finance team opens the CSV in a spreadsheet."""
    from tollgate.core.ledger import LedgerDB
    from tollgate.core.record import CallRecord

    ledger = LedgerDB(str(tmp_path / "u.db"))
    ledger.write(CallRecord("c1", 1_790_000_000, "10.0.0.1", "openai", "/v1/chat/completions", consumer="eve",
                            requested_model='=HYPERLINK("http://x","y")', status=403, decision="rejected").row())
    ledger.close()
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "usage_report.py"), "--ledger", str(tmp_path / "u.db"),
                          "--format", "csv", "--by", "model"], capture_output=True, text=True, check=True).stdout
    row = next(csv.DictReader(io.StringIO(out)))
    assert row["model"] == "'=HYPERLINK(\"http://x\",\"y\")" and row["blocked"] == "1"
