"""Turn the benchmark scripts' JSON results into the harness's tables.

Imported by `run.py` (standard library only).
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


#: The Bytewax releases measured: result-key (and interpreter) prefix -> version.
#: ``bytewax_tp`` is 0.17.2's throughput run, ``bytewax021_tp`` 0.21.1's.
BYTEWAX_RELEASES = {"bytewax": "0.17.2", "bytewax021": "0.21.1"}
#: Metrics for which a smaller figure is the better one.
LOWER_IS_BETTER = frozenset(
    {"p50_us", "p90_us", "p99_us", "max_us", "peak_minus_baseline_mb", "median_ms"}
)
IPS = "items_per_s"
MEM = "peak_minus_baseline_mb"


@dataclass(frozen=True)
class Better:
    """The better Bytewax release's figure of a workload, decided per metric.

    ``suffix`` names the workload: ``Better("tp")`` is whichever of
    ``bytewax_tp`` (0.17.2) and ``bytewax021_tp`` (0.21.1) has the higher
    items/s, or the lower figure for a metric in `LOWER_IS_BETTER`.
    """

    suffix: str

    def keys(self) -> dict[str, str]:
        """Result key -> release."""
        return {f"{prefix}_{self.suffix}": v for prefix, v in BYTEWAX_RELEASES.items()}


Ref = str | Better


@dataclass(frozen=True)
class Target:
    """One target of issue 16: aiowax's figure over a reference's.

    The ratio ``aiowax / reference`` of ``metric`` must be at least
    ``target`` (or at most, with ``at_most``, for memory).
    """

    name: str
    aiowax: str
    ref: Ref
    metric: str
    target: float
    at_most: bool = False

    def bound(self) -> str:
        return f"{'<=' if self.at_most else '>='} {self.target:g}x"

    def met(self, ratio: float) -> bool:
        return ratio <= self.target if self.at_most else ratio >= self.target


#: Issue 16's targets, the one place they are written down. Throughput is
#: input items/s, best of N; "Bytewax" is the better of 0.17.2 and 0.21.1
#: for that row. The RATIOS table reuses these for its Bytewax rows.
TARGETS: tuple[Target, ...] = (
    Target("map/filter b=1000 / Bytewax", "aiowax_tp", Better("tp"), IPS, 1.8),
    Target("map/filter b=10000 / Bytewax", "aiowax_tp10k", Better("tp10k"), IPS, 1.8),
    Target("map/filter b=1 / Bytewax", "aiowax_b1", Better("b1"), IPS, 1.8),
    Target("stateful_map / Bytewax", "aiowax_sm", Better("sm"), IPS, 1.8),
    Target("reduce / Bytewax", "aiowax_reduce", Better("reduce"), IPS, 1.8),
    Target("batch / Bytewax", "aiowax_batch", Better("batch"), IPS, 1.8),
    Target("tumbling windows / Bytewax", "aiowax_tumbling", Better("tumbling"), IPS, 1.8),
    Target("sliding windows / Bytewax", "aiowax_sliding", Better("sliding"), IPS, 1.8),
    Target("sessions, one-item keys / Bytewax", "aiowax_sessions", Better("sessions"), IPS, 1.8),
    Target("stateful_map, recovery on / Bytewax", "aiowax_rec_on", Better("rec_on"), IPS, 1.8),
    Target("map/filter b=1000 / plain loop", "aiowax_tp", "plain_tp", IPS, 0.7),
    Target("map/filter b=1 / plain loop (b=1000 figure)", "aiowax_b1", "plain_tp", IPS, 0.3),
    Target(
        "sessions memory, one-item keys / Bytewax",
        "aiowax_sessions",
        Better("sessions"),
        MEM,
        1.0,
        at_most=True,
    ),
)


def target_of(a_key: str, ref: Ref, metric: str) -> Target | None:
    """The issue-16 target of this comparison, if it has one."""
    for t in TARGETS:
        if (t.aiowax, t.ref, t.metric) == (a_key, ref, metric):
            return t
    return None


def si(x: float) -> str:
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def figure(res: dict[str, dict[str, Any]], key: str, metric: str) -> float | None:
    """One metric of one result, or ``None`` (not run, failed, missing)."""
    value = res.get(key, {}).get(metric)
    return float(value) if isinstance(value, int | float) else None


def reference(res: dict[str, dict[str, Any]], ref: Ref, metric: str) -> tuple[float, str] | None:
    """``(figure, release)`` of ``ref``: a result's, or the better Bytewax's."""
    if isinstance(ref, str):
        value = figure(res, ref, metric)
        return None if value is None else (value, "")
    found = [
        (v, rel) for key, rel in ref.keys().items() if (v := figure(res, key, metric)) is not None
    ]
    if not found:
        return None
    pick = min if metric in LOWER_IS_BETTER else max
    return pick(found, key=lambda f: f[0])


def releases_column(res: dict[str, dict[str, Any]], ref: Ref, metric: str, unit: str) -> str:
    """Each Bytewax release's figure, ``0.17.2 / 0.21.1`` ("-": not run)."""
    if isinstance(ref, str):
        return ""
    figures = [figure(res, key, metric) for key in ref.keys()]  # noqa: SIM118 (not a dict)
    return " / ".join("-" if f is None else si(f) for f in figures) + f" {unit}"


def was_run(res: dict[str, dict[str, Any]], key: str, ref: Ref) -> bool:
    keys = [key] + ([ref] if isinstance(ref, str) else list(ref.keys()))
    return any(k in res for k in keys)


def shown_ratio(ratio: float, target: float | None) -> str:
    shown = f"{ratio:.2f}"
    if target is not None and shown == f"{target:.2f}":
        shown = f"{ratio:.3f}"  # do not print "0.80x NOT MET" against 0.8x
    return f"{shown}x"


def comparisons(res: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """Rows: what, aiowax figure, reference figure, ratio, target, verdict, releases.

    A reference written ``Better(...)`` is the better Bytewax release of
    that row (its version is shown next to its figure); the last column
    gives both releases' figures, 0.17.2 / 0.21.1. A row whose comparison
    is one of `TARGETS` gets that target.
    """
    rows: list[tuple[str, ...]] = []

    def ratio_row(
        what: str, a_key: str, b_ref: Ref, metric: str, target: float | None, unit: str
    ) -> None:
        goal = target_of(a_key, b_ref, metric)
        a, b = figure(res, a_key, metric), reference(res, b_ref, metric)
        tgt = goal.bound() if goal else (f">= {target:g}x" if target else "")
        both = releases_column(res, b_ref, metric, unit)
        if a is None or b is None or b[0] == 0:
            if was_run(res, a_key, b_ref):
                rows.append((what, "-", "-", "-", tgt, "n/a", both))
            return
        ratio = a / b[0]
        if goal is not None:
            verdict = "MET" if goal.met(ratio) else "NOT MET"
            target = goal.target
        else:
            verdict = "info" if target is None else ("MET" if ratio >= target else "NOT MET")
        ref_s = f"{si(b[0])} {unit}" + (f" ({b[1]})" if b[1] else "")
        shown = shown_ratio(ratio, target)
        rows.append((what, f"{si(a)} {unit}", ref_s, shown, tgt, verdict, both))

    def bound_row(
        what: str, key: str, metric: str, ref: Ref | None, limit: float, unit: str
    ) -> None:
        a = figure(res, key, metric)
        if a is None:
            if key in res:
                rows.append((what, "-", "-", "-", f"< {limit:g} {unit}", "n/a", ""))
            return
        b = reference(res, ref, metric) if ref else None
        ref_s = f"{b[0]:.1f} {unit}" if b is not None else "-"
        ratio_s = f"{a / b[0]:.2f}x" if b else "-"
        verdict = "MET" if a < limit else "NOT MET"
        both = releases_column(res, ref, metric, unit) if ref else ""
        rows.append((what, f"{a:.1f} {unit}", ref_s, ratio_s, f"< {limit:g} {unit}", verdict, both))

    bw = Better
    ratio_row("throughput b=1000: aiowax / bytewax", "aiowax_tp", bw("tp"), IPS, None, "it/s")
    ratio_row("throughput b=1000: aiowax / plain loop", "aiowax_tp", "plain_tp", IPS, 0.5, "it/s")
    ratio_row("  (info) aiowax / plain map() loop", "aiowax_tp", "plain_map_tp", IPS, None, "it/s")
    ratio_row(
        "  (info) aiowax on asyncio loop / bytewax",
        "aiowax_tp_asyncio",
        bw("tp"),
        IPS,
        None,
        "it/s",
    )
    ratio_row(
        "throughput b=10000: aiowax / bytewax", "aiowax_tp10k", bw("tp10k"), IPS, None, "it/s"
    )
    ratio_row("throughput b=1: aiowax / bytewax", "aiowax_b1", bw("b1"), IPS, None, "it/s")
    ratio_row(
        "throughput b=1: aiowax / plain loop (b=1000)", "aiowax_b1", "plain_tp", IPS, None, "it/s"
    )
    bound_row(
        "latency p50 uvloop (ref: plain asyncio task)",
        "aiowax_lat",
        "p50_us",
        "plain_lat",
        100,
        "us",
    )
    for pct in ("p90_us", "p99_us"):
        ratio_row(
            f"  (info) latency {pct[:3]} uvloop: aiowax / plain",
            "aiowax_lat",
            "plain_lat",
            pct,
            None,
            "us",
        )
    ratio_row(
        "  (info) latency p50 asyncio: aiowax / plain",
        "aiowax_lat_asyncio",
        "plain_lat_asyncio",
        "p50_us",
        None,
        "us",
    )
    ratio_row(
        "  (info) latency p50: aiowax / bytewax", "aiowax_lat", bw("lat"), "p50_us", None, "us"
    )
    ratio_row(
        "  (info) latency p99: aiowax / bytewax", "aiowax_lat", bw("lat"), "p99_us", None, "us"
    )
    bound_row("memory peak-baseline (ref: plain loop)", "aiowax_mem", MEM, "plain_mem", 100, "MB")
    ratio_row("  (info) memory: aiowax / bytewax", "aiowax_mem", bw("mem"), MEM, None, "MB")
    ratio_row(
        "  (info) memory: aiowax N / aiowax N/10", "aiowax_mem", "aiowax_mem_small", MEM, None, "MB"
    )
    keyed_rows(ratio_row, bound_row)
    return rows


def keyed_rows(ratio_row: Any, bound_row: Any) -> None:
    """Rows of the keyed, async, window, session-memory, recovery and push groups."""
    ips, it, bw = IPS, "it/s", Better
    ratio_row("stateful_map: aiowax / bytewax", "aiowax_sm", bw("sm"), ips, None, it)
    ratio_row("stateful_map: aiowax / plain dict loop", "aiowax_sm", "plain_sm", ips, 0.5, it)
    ratio_row("reduce: aiowax / bytewax", "aiowax_reduce", bw("reduce"), ips, None, it)
    ratio_row(
        "  (info) reduce: aiowax / plain dict loop", "aiowax_reduce", "plain_reduce", ips, None, it
    )
    ratio_row("batch: aiowax / bytewax", "aiowax_batch", bw("batch"), ips, None, it)
    ratio_row(
        "  (info) batch: aiowax / plain dict loop", "aiowax_batch", "plain_batch", ips, None, it
    )
    ratio_row(
        "stateful_map 2 workers / 1 worker (aiowax)", "aiowax_sm_2w", "aiowax_sm", ips, 0.8, it
    )
    for prefix, version in BYTEWAX_RELEASES.items():
        ratio_row(
            f"  (info) bytewax {version} 2 workers / 1 worker",
            f"{prefix}_sm_2w",
            f"{prefix}_sm",
            ips,
            None,
            it,
        )
    ratio_row("  (info) 2 workers: aiowax / bytewax", "aiowax_sm_2w", bw("sm_2w"), ips, None, it)
    bound_row(
        "async mapper 10 ms, 100 keys x 10 (ref: asyncio)",
        "aiowax_async",
        "median_ms",
        "plain_async",
        300,
        "ms",
    )
    ratio_row(
        "tumbling windows: aiowax / bytewax", "aiowax_tumbling", bw("tumbling"), ips, None, it
    )
    ratio_row(
        "tumbling windows: aiowax / plain dict loop",
        "aiowax_tumbling",
        "plain_tumbling",
        ips,
        0.4,
        it,
    )
    ratio_row("sliding windows: aiowax / bytewax", "aiowax_sliding", bw("sliding"), ips, None, it)
    ratio_row(
        "  (info) sliding windows: aiowax / plain loop",
        "aiowax_sliding",
        "plain_sliding",
        ips,
        None,
        it,
    )
    ratio_row(
        "sessions, 1 item per key: memory / bytewax",
        "aiowax_sessions",
        bw("sessions"),
        MEM,
        None,
        "MB",
    )
    ratio_row(
        "  (info) sessions memory: aiowax N / aiowax N/10",
        "aiowax_sessions",
        "aiowax_sessions_small",
        MEM,
        None,
        "MB",
    )
    ratio_row(
        "sessions items/s: aiowax / bytewax", "aiowax_sessions", bw("sessions"), ips, None, it
    )
    ratio_row(
        "sessions memory at 20k items/s (same rate) / bytewax 0.17.2",
        "aiowax_sessions_paced",
        "bytewax_sessions_paced",
        MEM,
        None,
        "MB",
    )
    ratio_row(
        "sessions memory, every session open (gap 1 h) / bytewax 0.17.2",
        "aiowax_sessions_open",
        "bytewax_sessions_open",
        MEM,
        None,
        "MB",
    )
    ratio_row(
        "recovery on / off (aiowax, 1 s epochs)", "aiowax_rec_on", "aiowax_rec_off", ips, 0.7, it
    )
    ratio_row("recovery on: aiowax / bytewax", "aiowax_rec_on", bw("rec_on"), ips, None, it)
    for prefix, version in BYTEWAX_RELEASES.items():
        ratio_row(
            f"  (info) bytewax {version} recovery on / off",
            f"{prefix}_rec_on",
            f"{prefix}_rec_off",
            ips,
            None,
            it,
        )
    ratio_row(
        "  (info) push -> broadcast / TestingSource b=1",
        "aiowax_push",
        "aiowax_testing_b1",
        ips,
        None,
        it,
    )
    ratio_row(
        "  (info) push -> broadcast / TestingSource b=1000",
        "aiowax_push",
        "aiowax_testing_b1000",
        ips,
        None,
        it,
    )
    ratio_row(
        "  (info) push -> null sink / TestingSource b=1",
        "aiowax_push_null",
        "aiowax_testing_b1",
        ips,
        None,
        it,
    )
    ratio_row(
        "  (info) TestingSource b=1000: broadcast / null sink",
        "aiowax_testing_b1000_bc",
        "aiowax_testing_b1000",
        ips,
        None,
        it,
    )


def output_ok(res: dict[str, dict[str, Any]], key: str) -> bool:
    """False when a run's output check or count failed (missing runs are not wrong)."""
    r = res.get(key, {})
    return all(r.get(flag) is not False for flag in ("kept_ok", "written_ok", "check_ok"))


def evaluate_targets(res: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each of `TARGETS` against these results, as plain data (also for ``--json``).

    ``verdict`` is ``PASS`` / ``FAIL``, ``n/a`` when a side was not run or
    failed, ``WRONG OUTPUT`` when a run it rests on failed its output check.
    ``bytewax`` holds each release's figure (``None``: not run) for rows
    whose reference is the better Bytewax release.
    """
    out: list[dict[str, Any]] = []
    for t in TARGETS:
        a, b = figure(res, t.aiowax, t.metric), reference(res, t.ref, t.metric)
        keys = [t.aiowax] + ([t.ref] if isinstance(t.ref, str) else list(t.ref.keys()))
        row: dict[str, Any] = {
            "name": t.name,
            "metric": t.metric,
            "aiowax": a,
            "reference": None if b is None else b[0],
            "reference_is": "plain" if isinstance(t.ref, str) else (b[1] if b else None),
            "ratio": None,
            "target": t.target,
            "at_most": t.at_most,
            "verdict": "n/a",
        }
        if isinstance(t.ref, Better):
            row["bytewax"] = {v: figure(res, k, t.metric) for k, v in t.ref.keys().items()}
        if a is not None and b is not None and b[0] != 0:
            row["ratio"] = a / b[0]
            row["verdict"] = "PASS" if t.met(row["ratio"]) else "FAIL"
            if not all(output_ok(res, k) for k in keys):
                row["verdict"] = "WRONG OUTPUT"
        out.append(row)
    return out


def target_rows(res: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """The summary table: one row per `TARGETS` entry, from `evaluate_targets`."""
    rows: list[tuple[str, ...]] = []
    for t, e in zip(TARGETS, evaluate_targets(res), strict=True):
        unit = "MB" if t.metric == MEM else "it/s"

        def fmt(x: float | None, unit: str = unit) -> str:
            if x is None:
                return "-"
            return f"{x:.1f} {unit}" if unit == "MB" else f"{si(x)} {unit}"

        ref_s = fmt(e["reference"]) + (f" ({e['reference_is']})" if e["reference"] else "")
        ratio_s = "-" if e["ratio"] is None else shown_ratio(e["ratio"], t.target)
        both = releases_column(res, t.ref, t.metric, unit)
        rows.append((t.name, fmt(e["aiowax"]), ref_s, ratio_s, t.bound(), e["verdict"], both))
    return rows


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def figures(res: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for key, r in res.items():
        if "error" in r:
            rows.append((key, "ERROR", r["error"], ""))
            continue
        items = f"{r.get('items', 0):,}"
        if r["bench"] in ("throughput", "keyed", "windows", "push"):
            runs = ", ".join(f"{t:.3f}" for t in r["times_s"])
            what = f"{si(r['items_per_s'])} items/s best (runs s: {runs})"
            if "outputs" in r:
                what += f", {r['outputs'][0]:,} out"
            if r.get("last_epochs"):
                what += f", last epoch {'/'.join(str(e) for e in r['last_epochs'])}"
        elif r["bench"] == "async_keyed":
            items = f"{r['keys']} x {r['per_key']}"
            runs = ", ".join(f"{1000 * t:.0f}" for t in r["times_s"])
            what = (
                f"median {r['median_ms']:.1f} ms (runs ms: {runs}); floor "
                f"{1000 * r['floor_s']:.0f} ms, one key at a time {r['serial_s']:.0f} s"
            )
        elif r["bench"] == "sessions_memory":
            memo = r.get("forgotten_watermarks_bound")
            what = (
                f"peak-baseline {r['peak_minus_baseline_mb']:.1f} MB (baseline "
                f"{r['baseline_rss_mb']:.1f} MB), {r['wall_s']:.1f} s "
                f"({si(r['items_per_s'])} items/s), {r['sessions']:,} sessions"
                + (f", memo bound {memo:,}" if memo else "")
            )
            if r.get("rate"):
                what += (
                    f"; paced at {r['rate']:,} items/s, achieved "
                    f"{si(r['achieved_items_per_s'])}, {r['open_sessions_peak']:,} open at peak"
                )
        elif r["bench"] == "latency":
            items = f"{r['rounds']} x {r['items']:,}"
            p50s = "/".join(f"{v:.0f}" for v in r["rounds_p50_us"])
            what = (
                f"p50 {r['p50_us']:.1f} / p90 {r['p90_us']:.1f} / p99 {r['p99_us']:.1f} "
                f"/ max {r['max_us']:.0f} us (round p50s {p50s}), "
                f"CPU {100 * r['cpu_per_wall']:.0f}%"
            )
        else:
            what = (
                f"peak-baseline {r['peak_minus_baseline_mb']:.1f} MB (baseline "
                f"{r['baseline_rss_mb']:.1f} MB), {r['wall_s']:.1f} s, "
                f"{r['write_batch_calls']} writes (max {r['max_write_batch']} items)"
            )
        ok = "" if r.get("kept_ok", r.get("written_ok", True)) else "  WRONG COUNT"
        ok += "" if r.get("check_ok", True) in (True, None) else "  WRONG OUTPUT"
        rows.append((key, items, what + ok, variant(r)))
    return rows


def variant(r: dict[str, Any]) -> str:
    """The last column of ABSOLUTE FIGURES: event loop or what was varied."""
    parts = [r.get("loop") or ""]
    if r["bench"] == "keyed":
        parts = [r["op"], f"{r['workers']} worker(s)" if r.get("workers", 1) > 1 else ""]
        if r.get("epoch_s") is not None:
            parts.append(f"epochs {r['epoch_s']:g} s")
        if r.get("recovery"):
            parts.append("recovery on")
    elif r["bench"] == "windows":
        parts = [r["window"]]
    elif r["bench"] == "push":
        source = "PushSource" if r["source"] == "push" else f"TestingSource b={r['batch_size']}"
        parts = [f"{source} -> {r['sink']} sink"]
    return ", ".join(p for p in parts if p)


def git_state() -> str:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD") or "unknown commit"
    dirty = git("status", "--porcelain", "--", "src")
    return f"{head}" + (" + uncommitted changes under src/" if dirty else "")


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"date": datetime.now().astimezone().isoformat(timespec="seconds")}
    info["git"] = git_state()
    info["nproc"] = os.cpu_count()
    try:
        cpu = Path("/proc/cpuinfo").read_text()
        info["cpu"] = next(
            ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("model name")
        )
        mem = Path("/proc/meminfo").read_text().split()
        info["mem_gb"] = round(int(mem[mem.index("MemTotal:") + 1]) / 1024**2, 1)
    except (OSError, StopIteration, ValueError):
        pass
    return info
