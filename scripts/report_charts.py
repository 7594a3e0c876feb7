"""The charts of scripts/usage-report: who spent what (ranked bars with amounts and the total), and spend over time
per model (stacked bars). Built to stay readable with months of days and dozens of consumers."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: E402

MAX_BARS = 20     # consumers shown one by one; the rest are summed into one bar
MAX_SERIES = 7    # models shown one by one over time; the rest are "other models"
MAX_DATE_LABELS = 12


def amount(value: float, metric: str) -> str:
    """$12.35, $0.0042 (sub-cent spend is real money), or 12,345 tokens."""
    if metric != "cost":
        return f"{value:,.0f}"
    return f"${value:,.2f}" if value >= 1 or value == 0 else f"${value:.2g}" if value < 0.0001 else f"${value:.4f}"


def ranked(values: list[tuple[str, float]], keep: int) -> list[tuple[str, float]]:
    """Largest first, nothing empty; beyond `keep`, one "N others" entry."""
    values = sorted(((n, v) for n, v in values if v > 0), key=lambda item: (-item[1], item[0]))
    if len(values) <= keep:
        return values
    rest = values[keep - 1:]
    return values[:keep - 1] + [(f"{len(rest)} others", sum(v for _, v in rest))]


def literal(text: str) -> str:
    """A name as matplotlib must print it: two dollar signs would otherwise start a formula."""
    return text.replace("$", r"\$")


def figure(by_consumer: list[tuple[str, float]], series: dict[str, dict[str, float]], metric: str, title: str):
    """A matplotlib Figure: ranked consumers on top, spend (or tokens) over time below."""
    by_consumer = [(literal(name), value) for name, value in by_consumer]
    series = {literal(model): points for model, points in series.items()}
    title = literal(title)
    bars = ranked(by_consumer, MAX_BARS)
    models = ranked([(m, sum(points.values())) for m, points in series.items()], MAX_SERIES)
    named = {m for m, _ in models}
    buckets = sorted({x for points in series.values() for x in points})
    unit = "Spend" if metric == "cost" else "Tokens"

    height = 1.6 + 0.32 * max(len(bars), 3)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, height + 4.4), height_ratios=[height, 4.4],
                                      layout="constrained")
    fig.suptitle(title, fontsize=12)

    total = sum(v for _, v in by_consumer if v > 0)
    top.set_title(f"{unit} by consumer (total {amount(total, metric)})", loc="left", fontsize=11)
    if bars:
        names, values = [n for n, _ in bars][::-1], [v for _, v in bars][::-1]  # largest at the top
        drawn = top.barh(names, values, color="#4C72B0")
        top.bar_label(drawn, labels=[amount(v, metric) for v in values], padding=3, fontsize=8)
        top.set_xlim(0, max(values) * 1.18)  # room for the labels
        top.xaxis.set_major_formatter(FuncFormatter(lambda v, _: amount(v, metric)))
        top.tick_params(axis="y", labelsize=8)
    else:
        top.text(0.5, 0.5, "nothing spent in this period", ha="center", va="center", transform=top.transAxes)
        top.set_yticks([])
    top.spines[["top", "right"]].set_visible(False)

    step = "hour" if buckets and len(buckets[0]) > 10 else "day"
    bottom.set_title(f"{unit} per {step} by model", loc="left", fontsize=11)
    stacked = [0.0] * len(buckets)
    for model, _ in models:
        points = series[model] if model in named and model in series else {
            x: sum(series[m].get(x, 0) for m in series if m not in named) for x in buckets}
        heights = [points.get(x, 0) for x in buckets]
        bottom.bar(range(len(buckets)), heights, bottom=stacked, label=model, width=0.8)
        stacked = [s + h for s, h in zip(stacked, heights)]
    every = max(1, -(-len(buckets) // MAX_DATE_LABELS))
    shown = range(0, len(buckets), every)
    bottom.set_xticks(list(shown), [_short(buckets[i]) for i in shown], fontsize=8)
    bottom.yaxis.set_major_locator(MaxNLocator(6))
    bottom.yaxis.set_major_formatter(FuncFormatter(lambda v, _: amount(v, metric)))
    bottom.spines[["top", "right"]].set_visible(False)
    if models:  # outside the plot, never over the bars; in the order of the stack
        bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False, reverse=True)
    else:
        bottom.text(0.5, 0.5, "no spend in this period", ha="center", va="center", transform=bottom.transAxes)
    return fig


def _short(bucket: str) -> str:
    """2026-11-03 -> Nov 03; 2026-11-03 14:00 -> 03 14h."""
    if len(bucket) > 10:
        return f"{bucket[8:10]} {bucket[11:13]}h"
    months = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
    return f"{months[int(bucket[5:7]) - 1]} {bucket[8:10]}"


def save(fig, path) -> None:
    fig.savefig(path, dpi=110)
    plt.close(fig)


def svg(fig) -> str:
    """The figure as inline SVG for a self-contained HTML page."""
    out = io.StringIO()
    fig.savefig(out, format="svg")
    plt.close(fig)
    text = out.getvalue()
    return text[text.index("<svg"):]
