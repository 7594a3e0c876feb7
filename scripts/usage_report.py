"""Usage report behind scripts/usage-report: who spends what, from the usage ledger."""

import argparse
import csv
import json
import sqlite3
import sys
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from rich.console import Console
from rich.table import Table

from tollgate.core.ledger_pg import PgReader, is_postgres, redacted
from tollgate.core.report import COLUMNS, GROUPINGS, over_time, parse_when, report, unpriced_models

DEFAULT_LEDGER = "usage.db"
ROOT = Path(__file__).resolve().parents[1]


def chart(db, since, until, tz, metric: str, title: str):
    """The report's figure: consumers ranked by spend (or tokens), and spend over time per model."""
    import report_charts

    rows = report(db, "consumer", since, until, tz)
    value = (lambda r: r["cost_usd"]) if metric == "cost" else (lambda r: r["prompt_tokens"] + r["completion_tokens"])
    series = over_time(db, metric, since, until, tz)
    if len({x for points in series.values() for x in points}) == 1:  # one day only: hourly is more telling
        series = over_time(db, metric, since, until, tz, hourly=True)
    return report_charts.figure([(r["consumer"], value(r)) for r in rows], series, metric, title)


def _when(tz):
    def parse(text: str) -> float:
        try:
            return parse_when(text, tz=tz)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is no date: give 2026-11-01, an ISO date-time, or 7d / 12h / "
                                             f"30m (ago)") from None
    return parse


def _zone(name: str):
    try:
        return timezone.utc if name.upper() == "UTC" else ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(f"{name!r} is no time zone (e.g. UTC, Europe/Berlin)") from None


def default_ledger(config: Path) -> str:
    """The ledger the configuration names: its shared ledger (ledger.url, ${VAR}s expanded) if it has one, else its
    SQLite file (relative paths: to the repository, where scripts/run starts)."""
    try:
        section = (yaml.safe_load(config.read_text()) or {}).get("ledger", {})
        if section.get("url"):
            from tollgate.core.config import load_config
            return load_config(config).ledger_url
        path = Path(section.get("path") or DEFAULT_LEDGER)
    except (OSError, yaml.YAMLError, AttributeError):
        path = Path(DEFAULT_LEDGER)
    return str(path if path.is_absolute() else ROOT / path)


def open_ledger(ledger: str):
    """A PostgreSQL URL (the shared ledger) or a SQLite file, opened read-only."""
    if is_postgres(ledger):
        try:
            return PgReader(ledger)
        except Exception as e:
            sys.exit(f"usage-report: cannot read the shared ledger {redacted(ledger)}: {str(e).splitlines()[0]}")
    if not Path(ledger).exists():
        sys.exit(f"usage-report: no ledger at {ledger}")
    return sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)


def spreadsheet_safe(value):
    """Model names come from clients: text a spreadsheet would run as a formula is quoted (OWASP's CSV injection)."""
    return "'" + value if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def money(value: float) -> str:
    """Exact to a millionth of a dollar: sub-cent calls are real money."""
    return f"{value:.6f}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/usage-report", description=__doc__)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "gateway.yaml",
                        help="gateway configuration whose ledger is read (default config/gateway.yaml)")
    parser.add_argument("--ledger", help="postgresql://… (the shared ledger) or a SQLite file (default: the "
                                         "configuration's ledger.url, else its ledger.path)")
    parser.add_argument("--tz", type=_zone, default=timezone.utc, help="time zone of dates and days (default UTC)")
    parser.add_argument("--since", help="2026-11-01, an ISO date-time, or 7d / 12h / 30m ago")
    parser.add_argument("--until", help="same forms as --since (exclusive)")
    parser.add_argument("--by", choices=list(GROUPINGS), default="consumer")
    parser.add_argument("--format", choices=("table", "csv", "json", "html"), default="table",
                        help="html: a self-contained page with the table and the charts inline")
    parser.add_argument("--chart", type=Path, help="also draw a chart to FILE.png or FILE.svg")
    parser.add_argument("--chart-metric", choices=("cost", "tokens"), default="cost")
    args = parser.parse_args()
    try:
        since = _when(args.tz)(args.since) if args.since else None
        until = _when(args.tz)(args.until) if args.until else None
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    db = open_ledger(args.ledger or default_ledger(args.config))
    rows = report(db, args.by, since, until, args.tz)
    zone = getattr(args.tz, "key", "UTC")
    period = " to ".join(datetime.fromtimestamp(t, args.tz).strftime("%Y-%m-%d %H:%M") if t else label
                         for t, label in ((since, "the first call"), (until, "now")))

    title = f"tollgate usage by {args.by}, {period} ({zone})"
    unpriced = unpriced_models(db, since, until)
    warning = (f"{sum(unpriced.values())} calls were charged at the default price (no price known for "
               f"{', '.join(unpriced)}): add them to config/prices.yaml") if unpriced else ""

    if args.format == "json":
        json.dump(rows, sys.stdout, indent=2)
        print()
    elif args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=[args.by, *COLUMNS])
        writer.writeheader()
        writer.writerows({k: money(v) if k.endswith("usd") else spreadsheet_safe(v) for k, v in row.items()}
                         for row in rows)
    elif args.format == "html":
        import report_charts

        chart_svg = report_charts.svg(chart(db, since, until, args.tz, args.chart_metric, title))
        sys.stdout.write(html_page(title, args.by, rows, warning, chart_svg))
    else:
        table = Table(title=title)
        for column in (args.by, *COLUMNS):
            table.add_column(column, justify="left" if column == args.by else "right")
        for row in rows:
            table.add_row(*(cell(c, row[c]) if c != args.by else str(row[c]) for c in (args.by, *COLUMNS)))
        table.add_row("total", *(cell(c, v) for c, v in totals(rows).items()), style="bold")
        console = Console(width=180)
        console.print(table)
        if warning:
            console.print(f"[yellow]warning:[/] {warning}")
    if warning and args.format in ("csv", "json"):
        print(f"usage-report: warning: {warning}", file=sys.stderr)
    if args.chart:
        import report_charts

        report_charts.save(chart(db, since, until, args.tz, args.chart_metric, title), args.chart)
        print(f"chart written to {args.chart}", file=sys.stderr)


def cell(column: str, value) -> str:
    if value is None or value == "":
        return "-" if value is None else ""
    return money(value) if column.endswith("usd") else f"{value:.0f}" if column.endswith("ms") else str(value)


def totals(rows: list[dict]) -> dict:
    """The total row: sums, and nothing for percentiles (they do not add up)."""
    return {c: "" if c.endswith("_ms") else sum(r[c] or 0 for r in rows) for c in COLUMNS}


def html_page(title: str, by: str, rows: list[dict], warning: str, chart_svg: str) -> str:
    """One file a manager can open or mail: no scripts, no external styles or images."""
    head = "".join(f"<th>{escape(c)}</th>" for c in (by, *COLUMNS))
    body = "".join("<tr>" + "".join(f"<td>{escape(str(r[by]) if c == by else cell(c, r[c]))}</td>"
                                    for c in (by, *COLUMNS)) + "</tr>" for r in rows)
    total = "<tr class=total><td>total</td>" + "".join(f"<td>{cell(c, v)}</td>" for c, v in totals(rows).items())
    note = f"<p class=warn>warning: {escape(warning)}</p>" if warning else ""
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222 }}
table {{ border-collapse: collapse; margin: 1em 0 }}
th, td {{ padding: 3px 8px; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap }}
th:first-child, td:first-child {{ text-align: left }}
tr.total td {{ font-weight: bold; border-top: 2px solid #444 }}
.warn {{ color: #8a5300 }}
svg {{ max-width: 100%; height: auto }}
</style></head><body>
<h1>{escape(title)}</h1>
<p>Money in USD: <b>cost_usd</b> is what was spent, <b>saved_usd</b> what cache hits saved;
<b>unpriced</b> counts calls charged at the default price.</p>
{note}
<table><thead><tr>{head}</tr></thead><tbody>{body}{total}</tbody></table>
{chart_svg}
</body></html>
"""


if __name__ == "__main__":
    main()
