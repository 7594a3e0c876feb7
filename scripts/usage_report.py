"""Usage report behind scripts/usage-report: who spends what, from the usage ledger."""

import argparse
import csv
import json
import sqlite3
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from tollgate.core.report import COLUMNS, GROUPINGS, parse_when, report, usage_over_time

DEFAULT_LEDGER = "usage.db"


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


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/usage-report", description=__doc__)
    parser.add_argument("--ledger", default=DEFAULT_LEDGER, help="the SQLite usage ledger (default usage.db)")
    parser.add_argument("--since", help="2026-11-01, an ISO date-time, or 7d / 12h / 30m ago")
    parser.add_argument("--until", help="same forms as --since (exclusive)")
    parser.add_argument("--by", choices=list(GROUPINGS), default="consumer")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument("--chart", type=Path, help="also draw a chart to FILE.png or FILE.svg")
    parser.add_argument("--chart-metric", choices=("cost", "tokens"), default="cost")
    args = parser.parse_args()
    if not Path(args.ledger).exists():
        sys.exit(f"usage-report: no ledger at {args.ledger}")
    db = sqlite3.connect(f"file:{args.ledger}?mode=ro", uri=True)
    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until) if args.until else None
    rows = report(db, args.by, since, until)

    if args.format == "json":
        json.dump(rows, sys.stdout, indent=2)
        print()
    elif args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=[args.by, *COLUMNS])
        writer.writeheader()
        writer.writerows(rows)
    else:
        table = Table(title=f"tollgate usage by {args.by}")
        for column in (args.by, *COLUMNS):
            table.add_column(column, justify="left" if column == args.by else "right")
        fmt = lambda c, v: "-" if v is None else f"{v:.4f}" if c.endswith("usd") else f"{v:.0f}" if c.endswith("ms") else str(v)  # noqa: E731
        for row in rows:
            table.add_row(*(fmt(c, row[c]) if c != args.by else str(row[c]) for c in (args.by, *COLUMNS)))
        totals = {c: sum(r[c] or 0 for r in rows) for c in COLUMNS if not c.endswith("_ms")}
        table.add_row("total", *(fmt(c, totals[c]) if c in totals else "" for c in COLUMNS), style="bold")
        Console(width=160).print(table)
    if args.chart:
        draw(args.chart, db, since, until, args.chart_metric)
        print(f"chart written to {args.chart}", file=sys.stderr)


if __name__ == "__main__":
    main()
