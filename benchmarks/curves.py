"""How cost grows: items/s and peak memory against keys, steps, windows, workers, latency.

Usage (from anywhere; about 3 minutes on 2 cores)::

    python3 benchmarks/curves.py                      # every curve, then the plots
    python3 benchmarks/curves.py --family keys,steps  # some families (merged into the JSON)
    python3 benchmarks/curves.py --replot             # only redraw the plots from the JSON
    python3 benchmarks/run.py --bench curves          # the same, through the harness

Each point of each curve is one subprocess running one script in its
contestant's interpreter (``bench_curve.py`` aiowax, ``bytewax_curve.py``
Bytewax 0.17.2, ``bytewax021_curve.py`` Bytewax 0.21.1, ``plain_curve.py``
plain Python), which prints one JSON object: items/s (best of its runs) and
peak RSS above the pre-run RSS of its first timed run. Contestants take
turns point by point, so a noisy minute on the shared machine hits every
contestant's point, not one contestant's whole curve. The points go to
``benchmarks/plots/curves.json`` (points of curves not re-run are kept), a
table to stdout, and ``plot_curves.py`` (run by an interpreter that has
matplotlib, the aiowax dev venv's by default) draws one PNG per curve into
``benchmarks/plots/``. See `curvelib` for the workloads. Standard library
only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PLOTS = HERE / "plots"
CURVES_JSON = PLOTS / "curves.json"

#: contestant -> (interpreter key, script, extra arguments)
CONTESTANTS: dict[str, tuple[str, str, list[str]]] = {
    "aiowax": ("aiowax", "bench_curve.py", []),
    "bytewax": ("bytewax", "bytewax_curve.py", []),
    "bytewax021": ("bytewax021", "bytewax021_curve.py", []),
    "bytewax021-threads": ("bytewax021", "bytewax021_curve.py", ["--variant", "threads"]),
    "plain": ("aiowax", "plain_curve.py", []),
}
ALL = ("aiowax", "bytewax", "bytewax021", "plain")


@dataclass(frozen=True)
class Curve:
    """One curve: a family, an operator, its x values and who runs it."""

    family: str
    op: str
    xs: tuple[int, ...]
    contestants: tuple[str, ...]
    title: str
    xlabel: str
    log_x: bool = False
    #: contestant -> largest x it runs by default (``--full`` runs them all)
    max_x: tuple[tuple[str, int], ...] = ()
    #: A line under the plot.
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.family}_{self.op}"

    def limit(self, contestant: str) -> int | None:
        return dict(self.max_x).get(contestant)


KEYS = (100, 1_000, 10_000, 100_000, 1_000_000)
CURVES: tuple[Curve, ...] = (
    Curve(
        "keys",
        "stateful_map",
        KEYS,
        ALL,
        "stateful_map: cost against the number of keys",
        "keys (items = max(200k, keys), round robin)",
        log_x=True,
    ),
    Curve(
        "keys",
        "fold_window",
        KEYS,
        ALL,
        "fold_window, 10 s tumbling windows: cost against the number of keys",
        "keys (items = max(200k, keys), 1 ms apart in event time)",
        log_x=True,
        # Bytewax's per-window cost grows with the windows open: at 1M keys
        # 0.17.2 took 98 s and 0.21.1 274 s here, at 100k keys 0.21.1 minutes.
        max_x=(("bytewax", 100_000), ("bytewax021", 10_000)),
        note="Bytewax above 100k keys (0.17.2) and 10k keys (0.21.1) left out: minutes "
        "per point (curves.py --full runs them). One window per item from 10k keys on.",
    ),
    Curve(
        "steps",
        "map",
        (1, 2, 5, 10, 20),
        ALL,
        "pipeline length: N map(add_one) steps in a row",
        "map steps",
    ),
    Curve(
        "windows",
        "sliding",
        (1, 2, 5, 10, 20),
        ALL,
        "sliding windows (length W s, offset 1 s): cost against windows per item",
        "windows each item belongs to (W)",
    ),
    Curve(
        "workers",
        "map_filter",
        (1, 2, 4, 8),
        ("aiowax", "bytewax", "bytewax021"),
        "map + filter: workers in one process",
        "workers (worker_count_per_proc)",
        log_x=True,
        note="TestingSource has one partition: one worker reads it and map/filter keep "
        "the items there. Bytewax 0.17.2 gets 50k items with 2+ workers.",
    ),
    Curve(
        "workers",
        "stateful_map",
        (1, 2, 4, 8),
        ("aiowax", "bytewax", "bytewax021"),
        "stateful_map, 100 keys: workers in one process",
        "workers (worker_count_per_proc)",
        log_x=True,
        note="One worker reads the source; stateful_map routes each key to its worker. "
        "Bytewax 0.17.2 gets 50k items with 2+ workers.",
    ),
    Curve(
        "async",
        "map",
        (0, 1, 5, 10, 50),
        ("aiowax", "plain", "bytewax", "bytewax021", "bytewax021-threads"),
        "mapper latency at concurrency 100 (Bytewax: blocking time.sleep)",
        "mapper latency (ms)",
        note="aiowax: async def mapper, max_concurrency=100. Bytewax cannot await: its "
        "mapper blocks in time.sleep, one call at a time; the 0.21.1 threads variant "
        "runs each batch in a 100-thread pool.",
    ),
)
FAMILIES = tuple(dict.fromkeys(c.family for c in CURVES))


def log(msg: str) -> None:
    print(f"[curves {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def point_args(curve: Curve, contestant: str, x: int, scale: float) -> list[str]:
    """Items, repeats and warm-up of one point: a run of about 0.1-3 s."""

    def n(items: float) -> int:
        return max(10, int(items * scale))

    repeat = 2
    if curve.family == "keys":
        items = max(n(200_000), x)  # every key gets at least one item
        if items >= 1_000_000:
            repeat = 1
    elif curve.family == "workers" and contestant == "bytewax" and x > 1:
        items = n(50_000)  # 0.17.2 with several worker threads: ~50k items/s
    elif curve.family == "async":
        latency = x / 1000
        if contestant in ("bytewax", "bytewax021"):  # one blocking call at a time
            rate = 1 / latency if latency else 15_000
            items = max(20, n(0.5 * rate))
        else:  # 100 at a time, and the event loop's own cost
            rate = min(100 / latency if latency else 150_000, 80_000)
            items = min(max(1_000, n(0.5 * rate)), n(100_000))
    else:
        items = n(200_000)
    warmup = min(2_000, max(1, items // 10))
    return ["--items", str(items), "--repeat", str(repeat), "--warmup-items", str(warmup)]


def run_point(
    curve: Curve, contestant: str, x: int, pythons: dict[str, str], scale: float
) -> dict[str, Any]:
    interp, script, extra = CONTESTANTS[contestant]
    args = ["--family", curve.family, "--op", curve.op, "--x", str(x), *extra]
    args += point_args(curve, contestant, x, scale)
    cmd = [pythons[interp], str(HERE / script), *args]
    load = os.getloadavg()[0]  # the machine is shared: how busy it was
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False, timeout=900)
    took = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    base = {"curve": curve.name, "family": curve.family, "op": curve.op, "x": x}
    base |= {"contestant": contestant, "cmd": cmd[1:], "subprocess_s": took}
    base["loadavg_before"] = load
    if proc.returncode != 0 or not lines:
        what = f"{curve.name} x={x} {contestant}"
        log(f"{what} FAILED (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        return base | {"error": f"exit {proc.returncode}", "stderr": proc.stderr[-2000:]}
    result: dict[str, Any] = json.loads(lines[-1])
    result.pop("env", None)
    result |= base
    ips, mb = result["items_per_s"], result.get("peak_minus_baseline_mb", float("nan"))
    ok = "" if result.get("kept_ok", True) else "  WRONG COUNT"
    log(f"{curve.name} x={x} {contestant}: {ips:,.0f} items/s, {mb:.1f} MB ({took:.1f} s){ok}")
    return result


def run_curves(
    pythons: dict[str, str],
    families: list[str],
    contestants: list[str],
    scale: float = 1.0,
    full: bool = False,
) -> list[dict[str, Any]]:
    """Run the points of ``families`` for ``contestants`` (taking turns per point)."""
    results: list[dict[str, Any]] = []
    for curve in CURVES:
        if curve.family not in families:
            continue
        for x in curve.xs:
            for contestant in curve.contestants:
                interp = CONTESTANTS[contestant][0]
                if contestant not in contestants or interp not in pythons:
                    continue
                limit = curve.limit(contestant)
                if limit is not None and x > limit and not full:
                    continue
                results.append(run_point(curve, contestant, x, pythons, scale))
    return results


def merge(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``old`` points whose (curve, contestant) was not re-run, then ``new``."""
    rerun = {(r["curve"], r["contestant"]) for r in new}
    return [r for r in old if (r["curve"], r["contestant"]) not in rerun] + new


def si(x: float) -> str:
    for div, unit in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def tables(points: list[dict[str, Any]]) -> str:
    """One table per curve: x down, contestants across (items/s, MB, cost growth)."""
    out: list[str] = []
    for curve in CURVES:
        mine = [p for p in points if p.get("curve") == curve.name and "error" not in p]
        if not mine:
            continue
        who = [c for c in curve.contestants if any(p["contestant"] == c for p in mine)]
        out.append(f"\n{curve.name}: {curve.title}")
        out.append("  cell: items/s | peak-baseline MB | us per item (x first point's)")
        header = ["x", *who]
        rows = [header]
        first: dict[str, float] = {}
        for x in curve.xs:
            row = [f"{x:,}"]
            for c in who:
                p = next((q for q in mine if q["contestant"] == c and q["x"] == x), None)
                if p is None:
                    row.append("-")
                    continue
                us = 1e6 / p["items_per_s"]
                first.setdefault(c, us)
                bad = "" if p.get("kept_ok", True) else " WRONG COUNT"
                row.append(
                    f"{si(p['items_per_s'])} | {p.get('peak_minus_baseline_mb', 0):.1f} | "
                    f"{us:.2f} ({us / first[c]:.2f}x){bad}"
                )
            rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        for r in rows:
            out.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)))
    return "\n".join(out)


def plot_python(candidates: list[str | None]) -> str | None:
    """The first interpreter that can import matplotlib."""
    for python in candidates:
        if not python or not Path(python).exists():
            continue
        probe = subprocess.run(
            [python, "-c", "import matplotlib"], capture_output=True, check=False
        )
        if probe.returncode == 0:
            return python
    return None


def plot(python: str | None) -> None:
    if python is None:
        log(
            "no interpreter with matplotlib: plots not drawn (install it into the "
            "aiowax dev venv: .venv/bin/pip install matplotlib, or pass --plot-python)"
        )
        return
    cmd = [python, str(HERE / "plot_curves.py"), "--out", str(PLOTS)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        log(f"plot_curves.py failed (exit {proc.returncode})")
    else:
        for line in proc.stdout.splitlines():
            log(line)


def save(points: list[dict[str, Any]], info: dict[str, Any]) -> None:
    PLOTS.mkdir(exist_ok=True)
    for point in points:
        point.setdefault("git", info.get("git"))
        point.setdefault("date", info.get("date"))
    old: list[dict[str, Any]] = []
    if CURVES_JSON.exists():
        old = json.loads(CURVES_JSON.read_text()).get("points", [])
    payload = {"machine": info, "points": merge(old, points)}
    CURVES_JSON.write_text(json.dumps(payload, indent=1, default=str))
    log(f"points written to {CURVES_JSON.relative_to(ROOT)}")


def default_pythons() -> dict[str, str]:
    """The aiowax dev venv (else .bench-venvs/aiowax) and the two Bytewax venvs."""
    venvs = ROOT / ".bench-venvs"
    found: dict[str, str] = {}
    for key, paths in {
        "aiowax": [ROOT / ".venv/bin/python", venvs / "aiowax/bin/python"],
        "bytewax": [venvs / "bytewax-0.17.2/bin/python"],
        "bytewax021": [venvs / "bytewax-0.21.1/bin/python"],
    }.items():
        for path in paths:
            if path.exists():
                found[key] = str(path)
                break
    return found


def add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--family", default=",".join(FAMILIES), help=f"comma-separated subset of {FAMILIES}"
    )
    p.add_argument(
        "--contestants",
        default=",".join(CONTESTANTS),
        help=f"comma-separated subset of {tuple(CONTESTANTS)}",
    )
    p.add_argument("--full", action="store_true", help="also the slow Bytewax points (minutes)")
    p.add_argument("--plot-python", help="interpreter with matplotlib for the plots")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_options(p)
    p.add_argument("--scale", type=float, default=1.0, help="multiply every item count")
    p.add_argument("--replot", action="store_true", help="only redraw the plots from the JSON")
    p.add_argument("--aiowax-python")
    p.add_argument("--bytewax-python", help="interpreter with bytewax 0.17.2")
    p.add_argument("--bytewax021-python", help="interpreter with bytewax 0.21.1")
    opts = p.parse_args()
    pythons = default_pythons()
    for key in ("aiowax", "bytewax", "bytewax021"):
        if getattr(opts, f"{key}_python"):
            pythons[key] = getattr(opts, f"{key}_python")
    if "aiowax" not in pythons:
        sys.exit("no aiowax interpreter: pass --aiowax-python (or make .venv)")
    if not opts.replot:
        families = [f.strip() for f in opts.family.split(",") if f.strip()]
        contestants = [c.strip() for c in opts.contestants.split(",") if c.strip()]
        if unknown := set(families) - set(FAMILIES):
            p.error(f"unknown families {sorted(unknown)}")
        if unknown := set(contestants) - set(CONTESTANTS):
            p.error(f"unknown contestants {sorted(unknown)}")
        from report import machine

        info = machine()
        log(f"interpreters: {pythons}")
        points = run_curves(pythons, families, contestants, opts.scale, opts.full)
        save(points, info)
        print(tables(points))
    plot(plot_python([opts.plot_python, pythons["aiowax"], str(ROOT / ".venv/bin/python")]))


if __name__ == "__main__":
    main()
