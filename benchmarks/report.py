"""Turn the benchmark scripts' JSON results into the harness's tables.

Imported by `run.py` (standard library only).
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def si(x: float) -> str:
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def comparisons(res: dict[str, dict[str, Any]]) -> list[tuple[str, ...]]:
    """Rows: what, aiowax figure, reference figure, ratio, target, verdict."""
    rows: list[tuple[str, ...]] = []

    def get(key: str, metric: str) -> float | None:
        value = res.get(key, {}).get(metric)
        return float(value) if isinstance(value, int | float) else None

    def ratio_row(
        what: str, a_key: str, b_key: str, metric: str, target: float | None, unit: str
    ) -> None:
        a, b = get(a_key, metric), get(b_key, metric)
        if a is None or b is None or b == 0:
            if a_key in res or b_key in res:
                rows.append((what, "-", "-", "-", f">= {target:g}x" if target else "", "n/a"))
            return
        ratio = a / b
        verdict = "info" if target is None else ("MET" if ratio >= target else "NOT MET")
        tgt = "" if target is None else f">= {target:g}x"
        shown = f"{ratio:.2f}"
        if target is not None and shown == f"{target:.2f}":
            shown = f"{ratio:.3f}"  # do not print "0.80x NOT MET" against 0.8x
        rows.append((what, f"{si(a)} {unit}", f"{si(b)} {unit}", f"{shown}x", tgt, verdict))

    def bound_row(
        what: str, key: str, metric: str, ref: str | None, limit: float, unit: str
    ) -> None:
        a = get(key, metric)
        if a is None:
            if key in res:
                rows.append((what, "-", "-", "-", f"< {limit:g} {unit}", "n/a"))
            return
        b = get(ref, metric) if ref else None
        ref_s = f"{b:.1f} {unit}" if b is not None else "-"
        ratio_s = f"{a / b:.2f}x" if b else "-"
        verdict = "MET" if a < limit else "NOT MET"
        rows.append((what, f"{a:.1f} {unit}", ref_s, ratio_s, f"< {limit:g} {unit}", verdict))

    def info_row(what: str, key: str, metric: str, ref: str | None, unit: str) -> None:
        """An absolute figure with no target, next to a reference figure."""
        a = get(key, metric)
        if a is None:
            if key in res:
                rows.append((what, "-", "-", "-", "", "n/a"))
            return
        b = get(ref, metric) if ref else None
        ref_s = f"{b:.1f} {unit}" if b is not None else "-"
        ratio_s = f"{a / b:.2f}x" if b else "-"
        rows.append((what, f"{a:.1f} {unit}", ref_s, ratio_s, "", "info"))

    ips = "items_per_s"
    ratio_row("throughput b=1000: aiowax / bytewax", "aiowax_tp", "bytewax_tp", ips, 2, "it/s")
    ratio_row("throughput b=1000: aiowax / plain loop", "aiowax_tp", "plain_tp", ips, 0.5, "it/s")
    ratio_row("  (info) aiowax / plain map() loop", "aiowax_tp", "plain_map_tp", ips, None, "it/s")
    ratio_row(
        "  (info) aiowax on asyncio loop / bytewax",
        "aiowax_tp_asyncio",
        "bytewax_tp",
        ips,
        None,
        "it/s",
    )
    ratio_row("throughput b=1: aiowax / bytewax", "aiowax_b1", "bytewax_b1", ips, 500, "it/s")
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
        "  (info) latency p50: aiowax / bytewax", "aiowax_lat", "bytewax_lat", "p50_us", None, "us"
    )
    ratio_row(
        "  (info) latency p99: aiowax / bytewax", "aiowax_lat", "bytewax_lat", "p99_us", None, "us"
    )
    mem = "peak_minus_baseline_mb"
    bound_row("memory peak-baseline (ref: plain loop)", "aiowax_mem", mem, "plain_mem", 100, "MB")
    ratio_row("  (info) memory: aiowax / bytewax", "aiowax_mem", "bytewax_mem", mem, None, "MB")
    ratio_row(
        "  (info) memory: aiowax N / aiowax N/10", "aiowax_mem", "aiowax_mem_small", mem, None, "MB"
    )
    keyed_rows(ratio_row, bound_row, info_row)
    return rows


def keyed_rows(ratio_row: Any, bound_row: Any, info_row: Any) -> None:
    """Rows of the keyed, async, window, session-memory, recovery and push groups."""
    ips, it = "items_per_s", "it/s"
    ratio_row("stateful_map: aiowax / bytewax", "aiowax_sm", "bytewax_sm", ips, 1.5, it)
    ratio_row("stateful_map: aiowax / plain dict loop", "aiowax_sm", "plain_sm", ips, 0.5, it)
    ratio_row("reduce: aiowax / bytewax", "aiowax_reduce", "bytewax_reduce", ips, 1.5, it)
    ratio_row(
        "  (info) reduce: aiowax / plain dict loop", "aiowax_reduce", "plain_reduce", ips, None, it
    )
    ratio_row("batch: aiowax / bytewax", "aiowax_batch", "bytewax_batch", ips, 1.5, it)
    ratio_row(
        "  (info) batch: aiowax / plain dict loop", "aiowax_batch", "plain_batch", ips, None, it
    )
    ratio_row(
        "stateful_map 2 workers / 1 worker (aiowax)", "aiowax_sm_2w", "aiowax_sm", ips, 0.8, it
    )
    ratio_row("  (info) bytewax 2 workers / 1 worker", "bytewax_sm_2w", "bytewax_sm", ips, None, it)
    ratio_row(
        "  (info) 2 workers: aiowax / bytewax", "aiowax_sm_2w", "bytewax_sm_2w", ips, None, it
    )
    bound_row(
        "async mapper 10 ms, 100 keys x 10 (ref: asyncio)",
        "aiowax_async",
        "median_ms",
        "plain_async",
        300,
        "ms",
    )
    ratio_row(
        "tumbling windows: aiowax / bytewax", "aiowax_tumbling", "bytewax_tumbling", ips, 1.5, it
    )
    ratio_row(
        "tumbling windows: aiowax / plain dict loop",
        "aiowax_tumbling",
        "plain_tumbling",
        ips,
        0.4,
        it,
    )
    ratio_row(
        "  (info) sliding windows: aiowax / bytewax",
        "aiowax_sliding",
        "bytewax_sliding",
        ips,
        None,
        it,
    )
    ratio_row(
        "  (info) sliding windows: aiowax / plain loop",
        "aiowax_sliding",
        "plain_sliding",
        ips,
        None,
        it,
    )
    mem = "peak_minus_baseline_mb"
    info_row(
        "sessions, 1 item per key: peak-baseline (ref: bytewax)",
        "aiowax_sessions",
        mem,
        "bytewax_sessions",
        "MB",
    )
    ratio_row(
        "  (info) sessions memory: aiowax N / aiowax N/10",
        "aiowax_sessions",
        "aiowax_sessions_small",
        mem,
        None,
        "MB",
    )
    ratio_row(
        "  (info) sessions items/s: aiowax / bytewax",
        "aiowax_sessions",
        "bytewax_sessions",
        ips,
        None,
        it,
    )
    ratio_row(
        "recovery on / off (aiowax, 1 s epochs)", "aiowax_rec_on", "aiowax_rec_off", ips, 0.7, it
    )
    ratio_row("recovery on: aiowax / bytewax", "aiowax_rec_on", "bytewax_rec_on", ips, 1.5, it)
    ratio_row(
        "  (info) bytewax recovery on / off", "bytewax_rec_on", "bytewax_rec_off", ips, None, it
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
