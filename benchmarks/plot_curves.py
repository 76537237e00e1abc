"""Draw the curves of ``curves.py`` (and ``latency_load.py``) as PNGs with matplotlib.

Runs in an interpreter with matplotlib (a benchmark-only dependency: the
aiowax dev venv, ``.venv/bin/pip install matplotlib``); ``curves.py`` and
``latency_load.py`` call it after their runs. Reads
``benchmarks/plots/curves.json`` and, if present,
``benchmarks/plots/latency_load.json``; writes ``<curve>.png`` per curve
(items/s on the left, peak RSS above baseline on the right; log axes where
the x values are log-spaced) and ``latency_load.png``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from curves import CURVES, PLOTS, Curve
from matplotlib.ticker import FuncFormatter

STYLE: dict[str, dict[str, Any]] = {
    "aiowax": {"color": "tab:blue", "marker": "o", "label": "aiowax"},
    "bytewax": {"color": "tab:orange", "marker": "s", "label": "Bytewax 0.17.2"},
    "bytewax021": {"color": "tab:green", "marker": "^", "label": "Bytewax 0.21.1"},
    "bytewax021-threads": {
        "color": "tab:green",
        "marker": "v",
        "linestyle": "--",
        "label": "Bytewax 0.21.1, flat_map_batch + 100 threads",
    },
    "plain": {"color": "gray", "marker": ".", "linestyle": ":", "label": "plain Python loop"},
}


def si(x: float, _pos: Any = None) -> str:
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def minor_label(x: float, _pos: Any = None) -> str:
    """Label the 2x and 5x minor ticks of a log axis (the others stay bare)."""
    if x <= 0:
        return ""
    lead = x / 10 ** math.floor(math.log10(x) + 1e-9)
    return si(x) if round(lead) in (2, 5) and abs(lead - round(lead)) < 1e-6 else ""


def plot_curve(curve: Curve, points: list[dict[str, Any]], out: Path) -> Path | None:
    mine = [p for p in points if p.get("curve") == curve.name and "error" not in p]
    if not mine:
        return None
    fig, (ax_ips, ax_mem) = plt.subplots(1, 2, figsize=(12, 4.6))
    for contestant in curve.contestants:
        pts = sorted((p for p in mine if p["contestant"] == contestant), key=lambda p: p["x"])
        if not pts:
            continue
        xs = [p["x"] for p in pts]
        style = STYLE[contestant]
        ax_ips.plot(xs, [p["items_per_s"] for p in pts], **style)
        mem = [max(p.get("peak_minus_baseline_mb", 0.0), 0.05) for p in pts]
        ax_mem.plot(xs, mem, **style)
    if curve.family == "async":
        lat = [x for x in curve.xs if x > 0]
        ax_ips.plot(
            lat,
            [100_000 / x for x in lat],
            color="black",
            linestyle="--",
            linewidth=1,
            label="bound: 100 in flight / latency",
        )
        ax_ips.plot(
            lat,
            [1000 / x for x in lat],
            color="black",
            linestyle=":",
            linewidth=1,
            label="bound: 1 in flight / latency",
        )
    for ax in (ax_ips, ax_mem):
        if curve.log_x:
            ax.set_xscale("log", base=2 if curve.family == "workers" else 10)
        elif curve.family == "async":
            ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(list(curve.xs))
        ax.xaxis.set_major_formatter(FuncFormatter(si))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
        ax.set_xlabel(curve.xlabel)
        ax.grid(True, which="major", alpha=0.4)
        ax.grid(True, which="minor", alpha=0.15)
    ax_ips.set_yscale("log")
    ax_ips.yaxis.set_major_formatter(FuncFormatter(si))
    low, high = ax_ips.get_ylim()
    if high / low < 300:  # a few decades: label the 2x and 5x ticks too
        ax_ips.yaxis.set_minor_formatter(FuncFormatter(minor_label))
    else:
        ax_ips.yaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
    ax_ips.set_ylabel("input items/s (log)")
    ax_ips.set_title("throughput")
    if curve.family == "keys":
        ax_mem.set_yscale("log")
        ax_mem.set_ylabel("peak RSS above baseline, MB (log)")
    else:
        ax_mem.set_ylim(bottom=0)
        ax_mem.set_ylabel("peak RSS above baseline, MB")
    ax_mem.set_title("memory")
    ax_ips.legend(fontsize=8, loc="best")
    items = sorted({p["items"] for p in mine})
    span = f"{si(items[0])}" if len(items) == 1 else f"{si(items[0])}-{si(items[-1])}"
    git = next((p.get("git") for p in mine if p.get("git")), "?")
    fig.suptitle(f"{curve.title}\n{span} items per point; aiowax at {git}", fontsize=10)
    if curve.note:
        fig.text(0.5, 0.01, curve.note, ha="center", fontsize=8, wrap=True)
        fig.tight_layout(rect=(0, 0.05, 1, 1))
    else:
        fig.tight_layout()
    path = out / f"{curve.name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_latency_load(runs: list[dict[str, Any]], out: Path) -> Path | None:
    loaded = [r for r in runs if r.get("load_fraction") and "p50_us" in r]
    if not loaded:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for ax, pct in zip(axes, ("p50_us", "p99_us"), strict=True):
        for contestant, style in STYLE.items():
            for wake, dash in (("spin", "-"), ("awake", "--")):
                pts = [r for r in loaded if r["contestant"] == contestant and r["wake"] == wake]
                if not pts:
                    continue
                pts.sort(key=lambda r: r["load_fraction"])
                xs = [100 * r["load_fraction"] for r in pts]
                label = f"{style['label']}, {wake}"
                ax.plot(xs, [r[pct] for r in pts], **(style | {"linestyle": dash, "label": label}))
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.set_xlabel("offered load, % of each engine's own maximum throughput")
        ax.set_xticks([10, 50, 90])
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(pct[:3])
    axes[0].set_ylabel("latency from due time to sink, us (log)")
    axes[0].legend(fontsize=7, loc="best")
    maxes = {r["contestant"]: r["max_per_s"] for r in loaded if r.get("max_per_s") is not None}
    maxes.pop("plain", None)  # it runs at aiowax's rates
    what = ", ".join(f"{STYLE[c]['label']} {si(v)}/s" for c, v in maxes.items())
    git = next((r.get("git") for r in runs if r.get("git")), "?")
    fig.suptitle(
        "latency under load: open-loop source -> 5 x map(add_one) -> sink "
        f"(solid: spin, dashed: awake); aiowax at {git}\nmax sustained: {what} "
        "(plain loop: at aiowax's rates)",
        fontsize=10,
    )
    fig.tight_layout()
    path = out / "latency_load.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_latency_steps(runs: list[dict[str, Any]], out: Path) -> Path | None:
    mine = [r for r in runs if r.get("steps_curve") and "p50_us" in r]
    if not mine:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    for ax, pct in zip(axes, ("p50_us", "p99_us"), strict=True):
        for contestant, style in STYLE.items():
            pts = sorted(
                (r for r in mine if r["contestant"] == contestant), key=lambda r: r["maps"]
            )
            if pts:
                ax.plot([r["maps"] for r in pts], [r[pct] for r in pts], **style)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: f"{v:g}"))
        ax.set_xlabel("map steps between source and sink")
        ax.set_xticks(sorted({r["maps"] for r in mine}))
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(pct[:3])
    axes[0].set_ylabel("latency from due time to sink, us (log)")
    axes[0].legend(fontsize=8, loc="best")
    rate = mine[0]["offered_per_s"]
    git = next((r.get("git") for r in runs if r.get("git")), "?")
    fig.suptitle(
        f"latency against pipeline length at {si(rate)} items/s, open-loop source (spin)\n"
        f"aiowax at {git}",
        fontsize=10,
    )
    fig.tight_layout()
    path = out / "latency_steps.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=PLOTS)
    args = p.parse_args()
    written: list[Path] = []
    curves_json = args.out / "curves.json"
    if curves_json.exists():
        points = json.loads(curves_json.read_text())["points"]
        for curve in CURVES:
            path = plot_curve(curve, points, args.out)
            if path is not None:
                written.append(path)
    load_json = args.out / "latency_load.json"
    if load_json.exists():
        runs = json.loads(load_json.read_text())["runs"]
        for draw in (plot_latency_load, plot_latency_steps):
            path = draw(runs, args.out)
            if path is not None:
                written.append(path)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print("nothing to plot")


if __name__ == "__main__":
    main()
