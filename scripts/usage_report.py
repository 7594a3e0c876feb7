"""Usage report behind scripts/usage-report: who spends what, from the usage ledger."""

import argparse
import csv
import json
import sqlite3
import sys
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from rich.console import Console
from rich.table import Table

from tollgate.core.report import COLUMNS, GROUPINGS, parse_when, report, usage_over_time

DEFAULT_LEDGER = "usage.db"
ROOT = Path(__file__).resolve().parents[1]


def draw(path: Path, db, since, until, metric: str) -> None:
    """Share of cost (or tokens) per consumer, and tokens over time per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report(db, "consumer", since, until)
    key = "cost_usd" if metric == "cost" and any(r["cost_usd"] for r in rows) else "tokens"
    shares = [(r["consumer"], r["cost_usd"] if key == "cost_usd" else r["prompt_tokens"] + r["completion_tokens"])
              for r in rows]
    shares = [(name, value) for name, value in shares if value > 0]
    series = usage_over_time(db, since, until)
    if sum(len(points) for points in series.values()) <= len(series):  # one day only: hourly is more telling
        series = usage_over_time(db, since, until, bucket="%Y-%m-%d %H:00")

    fig, (pie, lines) = plt.subplots(1, 2, figsize=(13, 5.5))
    if shares:
        pie.pie([v for _, v in shares], labels=[n for n, _ in shares], autopct="%1.1f%%", startangle=90)
    pie.set_title("Share of cost per consumer" if key == "cost_usd" else "Share of tokens per consumer")
    buckets = sorted({x for points in series.values() for x in points})
    bottom = [0] * len(buckets)
    for model, points in sorted(series.items()):  # stacked bars: readable with one bucket or a hundred
        heights = [points.get(x, 0) for x in buckets]
        lines.bar(buckets, heights, bottom=bottom, label=model)
        bottom = [b + h for b, h in zip(bottom, heights)]
    lines.set_title("Tokens over time per model")
    lines.set_ylabel("tokens")
    lines.tick_params(axis="x", rotation=30)
    if series:
        lines.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


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
    """The ledger the configuration names (relative paths: to the repository, where scripts/run starts)."""
    try:
        path = Path((yaml.safe_load(config.read_text()) or {}).get("ledger", {}).get("path") or DEFAULT_LEDGER)
    except (OSError, yaml.YAMLError, AttributeError):
        path = Path(DEFAULT_LEDGER)
    return str(path if path.is_absolute() else ROOT / path)


def money(value: float) -> str:
    """Exact to a millionth of a dollar: sub-cent calls are real money."""
    return f"{value:.6f}"


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/usage-report", description=__doc__)
    parser.add_argument("--config", type=Path, default=ROOT / "config" / "gateway.yaml",
                        help="gateway configuration whose ledger is read (default config/gateway.yaml)")
    parser.add_argument("--ledger", help="the SQLite usage ledger (default: the configuration's ledger.path)")
    parser.add_argument("--tz", type=_zone, default=timezone.utc, help="time zone of dates and days (default UTC)")
    parser.add_argument("--since", help="2026-11-01, an ISO date-time, or 7d / 12h / 30m ago")
    parser.add_argument("--until", help="same forms as --since (exclusive)")
    parser.add_argument("--by", choices=list(GROUPINGS), default="consumer")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument("--chart", type=Path, help="also draw a chart to FILE.png or FILE.svg")
    parser.add_argument("--chart-metric", choices=("cost", "tokens"), default="cost")
    args = parser.parse_args()
    try:
        since = _when(args.tz)(args.since) if args.since else None
        until = _when(args.tz)(args.until) if args.until else None
    except argparse.ArgumentTypeError as e:
        parser.error(str(e))
    ledger = args.ledger or default_ledger(args.config)
    if not Path(ledger).exists():
        sys.exit(f"usage-report: no ledger at {ledger}")
    db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True)
    rows = report(db, args.by, since, until, args.tz)
    zone = getattr(args.tz, "key", "UTC")
    period = " to ".join(datetime.fromtimestamp(t, args.tz).strftime("%Y-%m-%d %H:%M") if t else label
                         for t, label in ((since, "the first call"), (until, "now")))

    if args.format == "json":
        json.dump(rows, sys.stdout, indent=2)
        print()
    elif args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=[args.by, *COLUMNS])
        writer.writeheader()
        writer.writerows({k: money(v) if k.endswith("usd") else v for k, v in row.items()} for row in rows)
    else:
        table = Table(title=f"tollgate usage by {args.by}, {period} ({zone})")
        for column in (args.by, *COLUMNS):
            table.add_column(column, justify="left" if column == args.by else "right")
        fmt = lambda c, v: "-" if v is None else money(v) if c.endswith("usd") else f"{v:.0f}" if c.endswith("ms") else str(v)  # noqa: E731
        for row in rows:
            table.add_row(*(fmt(c, row[c]) if c != args.by else str(row[c]) for c in (args.by, *COLUMNS)))
        totals = {c: sum(r[c] or 0 for r in rows) for c in COLUMNS if not c.endswith("_ms")}
        table.add_row("total", *(fmt(c, totals[c]) if c in totals else "" for c in COLUMNS), style="bold")
        Console(width=170).print(table)
    if args.chart:
        draw(args.chart, db, since, until, args.chart_metric)
        print(f"chart written to {args.chart}", file=sys.stderr)


if __name__ == "__main__":
    main()
