"""Run the aiowax vs Bytewax 0.17.2 / 0.21.1 vs plain-Python benchmarks; print ratios.

Usage (from anywhere; paths are relative to the repository root)::

    python3 benchmarks/run.py                 # everything, full sizes
    python3 benchmarks/run.py --quick         # everything, 1/10 of the items
    python3 benchmarks/run.py --bench throughput,latency
    python3 benchmarks/run.py --bench curves,latency_load   # opt-in: curves, plots

The first run creates ``.bench-venvs/bytewax-0.17.2`` (``pip install
bytewax==0.17.2``), ``.bench-venvs/bytewax-0.21.1`` (``pip install
bytewax==0.21.1``) and ``.bench-venvs/aiowax`` (``pip install -e .``) at the
repository root, unless ``--bytewax-python`` / ``--bytewax021-python`` /
``--aiowax-python`` point at interpreters that already have them. Each
benchmark script runs in its own subprocess and prints one JSON object; this
script only orchestrates, checks and tabulates. Every Bytewax workload runs
in both releases (``bytewax_*.py`` in 0.17.2, ``bytewax021_*.py`` in 0.21.1)
and the tables compare aiowax with the better of the two, row by row; the
issue-16 targets (`report.TARGETS`) close the output. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from report import (
    BYTEWAX_RELEASES,
    comparisons,
    evaluate_targets,
    figures,
    machine,
    table,
    target_rows,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENVS = ROOT / ".bench-venvs"
GROUPS = (
    "throughput",
    "batch1",
    "latency",
    "memory",
    "keyed",
    "async_keyed",
    "windows",
    "sessions_memory",
    "recovery",
    "push",
)
#: Groups run only when named in --bench: the cost curves (``curves.py``, about
#: 3 minutes, PNG plots) and latency under load (``latency_load.py``, about
#: 4 minutes). They print their own tables and write ``benchmarks/plots/``.
OPT_IN = ("curves", "latency_load")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- interpreters ------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def probe(python: Path | str, code: str) -> str | None:
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else None


def ensure_venv(venv: Path, base: str, pip_args: list[str], ok: Callable[[Path], bool]) -> Path:
    """Create ``venv`` if missing and ``pip install pip_args`` unless ``ok``."""
    python = venv_python(venv)
    if not python.exists():
        log(f"creating venv {venv.relative_to(ROOT)} with {base}")
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    if not ok(python):
        log(f"pip install {' '.join(pip_args)} into {venv.relative_to(ROOT)}")
        subprocess.run([str(python), "-m", "pip", "install", "-q", *pip_args], check=True)
        if not ok(python):
            sys.exit(f"{venv}: installation did not produce a usable interpreter")
    return python


def bytewax_ok(python: Path | str, version: str) -> bool:
    code = "import bytewax, importlib.metadata as m; print(m.version('bytewax'))"
    return probe(python, code) == version


def aiowax_ok(python: Path | str) -> bool:
    return probe(python, "import aiowax, uvloop; print(aiowax.__file__)") is not None


def aiowax_is_this_checkout(python: Path) -> bool:
    where = probe(python, "import aiowax, uvloop; print(aiowax.__file__)")
    return where is not None and Path(where).resolve().is_relative_to(ROOT / "src")


def interpreters(args: argparse.Namespace, need: set[str]) -> dict[str, str]:
    VENVS.mkdir(exist_ok=True)
    if args.aiowax_python:
        if not aiowax_ok(args.aiowax_python):
            sys.exit(f"--aiowax-python {args.aiowax_python}: cannot import aiowax and uvloop")
        aiowax = args.aiowax_python
    else:
        pip_args = ["-e", str(ROOT)]
        aiowax = str(
            ensure_venv(VENVS / "aiowax", args.venv_python, pip_args, aiowax_is_this_checkout)
        )
    pythons = {"aiowax": aiowax}
    for name, version in BYTEWAX_RELEASES.items():
        if name not in need:
            continue
        given = getattr(args, f"{name}_python")
        if given:
            if not bytewax_ok(given, version):
                option = f"--{name}-python"
                sys.exit(f"{option} {given}: no bytewax {version}")
            pythons[name] = given
        else:
            venv = VENVS / f"bytewax-{version}"
            pip_args = [f"bytewax=={version}"]

            def ok(python: Path, version: str = version) -> bool:
                return bytewax_ok(python, version)

            pythons[name] = str(ensure_venv(venv, args.venv_python, pip_args, ok))
    return pythons


# --- jobs --------------------------------------------------------------------


@dataclass
class Job:
    key: str
    group: str
    interpreter: str  # "aiowax", or a key of BYTEWAX_RELEASES
    script: str
    args: list[str] = field(default_factory=list)


#: Items/s of the paced session-memory runs: one Bytewax 0.17.2 keeps up with.
SESSIONS_RATE = 20_000


def jobs(opts: argparse.Namespace) -> list[Job]:
    def n(items: int) -> str:
        return str(max(100, int(items * opts.scale)))

    aw, bw = "aiowax", "bytewax"  # which interpreter runs the script
    tp_a, tp_b, tp_p = "bench_throughput.py", "bytewax_throughput.py", "plain_throughput.py"
    lat_a, lat_b = "bench_latency.py", "bytewax_latency.py"
    mem_a, mem_b = "bench_memory.py", "bytewax_memory.py"
    r = ["--repeat", str(opts.repeat)]
    tp = ["--items", n(1_000_000), "--batch-size", "1000", *r]
    tp10k = ["--items", n(1_000_000), "--batch-size", "10000", *r]
    b1 = ["--batch-size", "1", *r]
    plain = ["--items", n(1_000_000), *r]
    lat = ["--items", n(2_000), *r]
    lat_p = [*lat, "--contestant", "plain"]
    big = opts.memory_items or int(10_000_000 * opts.scale)
    mem, small = ["--items", str(big)], ["--items", str(max(100, big // 10))]
    table = [
        ("aiowax_tp", "throughput", aw, tp_a, tp),
        ("aiowax_tp_asyncio", "throughput", aw, tp_a, [*tp, "--loop", "asyncio"]),
        ("bytewax_tp", "throughput", bw, tp_b, tp),
        ("aiowax_tp10k", "throughput", aw, tp_a, tp10k),
        ("bytewax_tp10k", "throughput", bw, tp_b, tp10k),
        ("plain_tp", "throughput", aw, tp_p, plain),
        ("plain_map_tp", "throughput", aw, tp_p, [*plain, "--form", "map"]),
        ("aiowax_b1", "batch1", aw, tp_a, ["--items", n(1_000_000), *b1]),
        # Bytewax 0.17.2 parks ~1 ms per input batch: 3,000 items are enough.
        ("bytewax_b1", "batch1", bw, tp_b, ["--items", n(3_000), *b1]),
        ("aiowax_lat", "latency", aw, lat_a, [*lat, "--loop", "uvloop"]),
        ("aiowax_lat_asyncio", "latency", aw, lat_a, [*lat, "--loop", "asyncio"]),
        ("plain_lat", "latency", aw, lat_a, lat_p),
        ("plain_lat_asyncio", "latency", aw, lat_a, [*lat_p, "--loop", "asyncio"]),
        ("bytewax_lat", "latency", bw, lat_b, lat),
        ("aiowax_mem", "memory", aw, mem_a, mem),
        ("aiowax_mem_small", "memory", aw, mem_a, small),
        ("plain_mem", "memory", aw, mem_a, [*mem, "--contestant", "plain"]),
        ("bytewax_mem", "memory", bw, mem_b, mem),
        ("bytewax_mem_small", "memory", bw, mem_b, small),
    ]
    table += new_jobs(opts, n, r)
    # 0.21.1 is fast enough at batch size 1 and with 2 workers to take
    # aiowax's item counts rather than 0.17.2's smaller ones.
    items021 = {
        "bytewax_b1": ["--items", n(1_000_000), *b1],
        "bytewax_sm_2w": ["--items", n(1_000_000), *r, "--workers", "2"],
    }
    table = with_bytewax021(table, items021)
    if "sessions_memory" in opts.groups:
        # Session memory at one input rate for both engines (the unpaced
        # figure grows with the engine's speed: BENCHMARKS README). Bytewax
        # 0.17.2 only: 0.21.1 falls behind at this rate (7.8k of 20k items/s
        # measured) and its memory follows the keys seen, not the sessions open.
        keys = opts.session_keys or max(100, int(1_000_000 * opts.scale))
        paced = ["--items", str(keys), "--rate", str(SESSIONS_RATE)]
        # And with every session open to the end of the input (gap 1 h): the
        # same number open in both engines whatever their speed, so the
        # memory per open session. 200k keys: Bytewax 0.17.2 takes ~40 s.
        all_open = ["--items", str(max(100, keys // 5)), "--gap-s", "3600"]
        table += [
            ("aiowax_sessions_paced", "sessions_memory", aw, "bench_sessions_memory.py", paced),
            ("bytewax_sessions_paced", "sessions_memory", bw, "bytewax_sessions_memory.py", paced),
            ("aiowax_sessions_open", "sessions_memory", aw, "bench_sessions_memory.py", all_open),
            (
                "bytewax_sessions_open",
                "sessions_memory",
                bw,
                "bytewax_sessions_memory.py",
                all_open,
            ),
        ]
    releases = {name for name, v in BYTEWAX_RELEASES.items() if v in opts.bytewax_releases}
    wanted = [Job(*row) for row in table if row[1] in opts.groups]
    return [j for j in wanted if j.interpreter == aw or j.interpreter in releases]


Row = tuple[str, str, str, str, list[str]]


def with_bytewax021(rows: list[Row], args021: dict[str, list[str]]) -> list[Row]:
    """Each Bytewax 0.17.2 job followed by its Bytewax 0.21.1 twin.

    The twin runs ``bytewax021_<what>.py`` (the same workload in 0.21.1's
    API) in the ``bytewax021`` interpreter under the key
    ``bytewax021_<suffix>``, with the same arguments unless ``args021``
    gives others for that key.
    """
    out: list[Row] = []
    for key, group, interp, script, args in rows:
        out.append((key, group, interp, script, args))
        if interp == "bytewax":
            twin_key = "bytewax021_" + key.removeprefix("bytewax_")
            twin_script = "bytewax021_" + script.removeprefix("bytewax_")
            out.append((twin_key, group, "bytewax021", twin_script, args021.get(key, args)))
    return out


def new_jobs(opts: argparse.Namespace, n: Callable[[int], str], r: list[str]) -> list[Row]:
    """Jobs of the keyed, async, window, session-memory, recovery and push groups."""
    aw, bw = "aiowax", "bytewax"
    kd_a, kd_b, kd_p = "bench_keyed.py", "bytewax_keyed.py", "plain_keyed.py"
    win_a, win_b, win_p = "bench_windows.py", "bytewax_windows.py", "plain_windows.py"
    ses_a, ses_b = "bench_sessions_memory.py", "bytewax_sessions_memory.py"
    keyed = ["--items", n(1_000_000), *r]
    sessions = str(opts.session_keys) if opts.session_keys else n(1_000_000)
    sessions_small = str(max(100, int(sessions) // 10))
    # Enough items that a 1 s epoch interval closes several epochs per run.
    rec = ["--items", n(10_000_000), "--epoch-s", "1", *r]
    push = ["bench_push.py", "--items", n(1_000_000), *r]
    rows: list[Row] = []
    for op, short in (("stateful_map", "sm"), ("reduce", "reduce"), ("batch", "batch")):
        rows += [
            (f"aiowax_{short}", "keyed", aw, kd_a, [*keyed, "--op", op]),
            (f"bytewax_{short}", "keyed", bw, kd_b, [*keyed, "--op", op]),
            (f"plain_{short}", "keyed", aw, kd_p, [*keyed, "--op", op]),
        ]
    rows += [
        ("aiowax_sm_2w", "keyed", aw, kd_a, [*keyed, "--workers", "2"]),
        # Bytewax 0.17.2 with 2 worker threads is ~10-50x slower: fewer items.
        ("bytewax_sm_2w", "keyed", bw, kd_b, ["--items", n(100_000), *r, "--workers", "2"]),
        ("aiowax_async", "async_keyed", aw, "bench_async_keyed.py", ["--repeat", "5"]),
        (
            "plain_async",
            "async_keyed",
            aw,
            "bench_async_keyed.py",
            ["--repeat", "5", "--contestant", "plain"],
        ),
    ]
    for window in ("tumbling", "sliding"):
        args = ["--items", n(1_000_000), *r, "--window", window]
        rows += [
            (f"aiowax_{window}", "windows", aw, win_a, args),
            (f"bytewax_{window}", "windows", bw, win_b, args),
            (f"plain_{window}", "windows", aw, win_p, args),
        ]
    rows += [
        ("aiowax_sessions", "sessions_memory", aw, ses_a, ["--items", sessions]),
        ("aiowax_sessions_small", "sessions_memory", aw, ses_a, ["--items", sessions_small]),
        ("bytewax_sessions", "sessions_memory", bw, ses_b, ["--items", sessions]),
        ("bytewax_sessions_small", "sessions_memory", bw, ses_b, ["--items", sessions_small]),
        ("aiowax_rec_off", "recovery", aw, kd_a, rec),
        ("aiowax_rec_on", "recovery", aw, kd_a, [*rec, "--recovery"]),
        ("bytewax_rec_on", "recovery", bw, kd_b, [*rec, "--recovery"]),
        ("bytewax_rec_off", "recovery", bw, kd_b, rec),
        ("aiowax_push", "push", aw, push[0], push[1:]),
        ("aiowax_push_null", "push", aw, push[0], [*push[1:], "--sink", "null"]),
        (
            "aiowax_testing_b1",
            "push",
            aw,
            push[0],
            [*push[1:], "--source", "testing", "--sink", "null", "--batch-size", "1"],
        ),
        (
            "aiowax_testing_b1000",
            "push",
            aw,
            push[0],
            [*push[1:], "--source", "testing", "--sink", "null", "--batch-size", "1000"],
        ),
        (
            "aiowax_testing_b1000_bc",
            "push",
            aw,
            push[0],
            [*push[1:], "--source", "testing", "--batch-size", "1000"],
        ),
    ]
    return rows


def run_job(job: Job, python: str) -> dict[str, Any]:
    cmd = [python, str(HERE / job.script), *job.args]
    log(f"{job.key}: {job.script} {' '.join(job.args)}")
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False, timeout=3600)
    took = time.perf_counter() - start
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        log(f"{job.key} FAILED (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        return {"error": f"exit {proc.returncode}", "stderr": proc.stderr[-3000:], "cmd": cmd}
    result: dict[str, Any] = json.loads(lines[-1])
    result["cmd"] = cmd
    result["subprocess_s"] = took
    for flag in ("kept_ok", "written_ok", "check_ok"):
        if result.get(flag) is False:
            log(f"WARNING {job.key}: wrong output ({flag} is false)")
    return result


def run_opt_in(opts: argparse.Namespace, pythons: dict[str, str]) -> dict[str, list[Any]]:
    """The opt-in groups named in ``--bench``: curves and latency under load."""
    if not set(OPT_IN) & set(opts.groups):
        return {}
    import curves
    import latency_load

    extra: dict[str, list[Any]] = {}
    info = machine()
    releases = [name for name, v in BYTEWAX_RELEASES.items() if v in opts.bytewax_releases]
    plot_with = [pythons["aiowax"], str(ROOT / ".venv/bin/python")]
    if "curves" in opts.groups:
        contestants = [
            c for c, (interp, _, _) in curves.CONTESTANTS.items() if interp in ("aiowax", *releases)
        ]
        log(f"curves: {', '.join(contestants)} (scale {opts.scale:g})")
        points = curves.run_curves(pythons, list(curves.FAMILIES), contestants, opts.scale)
        curves.save(points, info)
        print(curves.tables(points))
        curves.plot(curves.plot_python(plot_with))
        extra["curves"] = points
    if "latency_load" in opts.groups:
        engines = [e for e, (interp, _, _) in latency_load.ENGINES.items() if interp in pythons]
        runs = latency_load.run_latency_load(pythons, engines)
        latency_load.save(runs, info)
        print("\nLATENCY UNDER LOAD (open-loop source -> 5 x map -> sink)")
        print(latency_load.table(runs))
        print()
        print(latency_load.steps_table(runs))
        curves.plot(curves.plot_python(plot_with))
        extra["latency_load"] = runs
    return extra


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--bench",
        default=",".join(GROUPS),
        help=f"comma-separated subset of {','.join(GROUPS)} (the default), "
        f"and of the opt-in {','.join(OPT_IN)}",
    )
    p.add_argument("--quick", action="store_true", help="1/10 of the items, 2 runs each")
    p.add_argument(
        "--scale", type=float, default=None, help="multiply every item count (default 1)"
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="runs per throughput figure (best is kept; default 3)",
    )
    p.add_argument(
        "--memory-items",
        type=int,
        default=None,
        help="items of the memory benchmark (default 10,000,000 x scale)",
    )
    p.add_argument(
        "--session-keys",
        type=int,
        default=None,
        help="keys of the session-memory benchmark (default 1,000,000 x scale)",
    )
    p.add_argument(
        "--aiowax-python",
        help="use this interpreter (with aiowax and uvloop) instead of .bench-venvs/aiowax",
    )
    for name, version in BYTEWAX_RELEASES.items():
        p.add_argument(
            f"--{name}-python",
            help=f"use this interpreter (with bytewax {version}) instead of "
            f".bench-venvs/bytewax-{version}",
        )
    p.add_argument(
        "--bytewax-releases",
        default=",".join(BYTEWAX_RELEASES.values()),
        help="comma-separated Bytewax releases to run (default: all of "
        f"{','.join(BYTEWAX_RELEASES.values())}); the tables use the better of those run",
    )
    p.add_argument(
        "--venv-python",
        default=sys.executable,
        help="interpreter that creates the venvs (default: this one)",
    )
    p.add_argument("--skip-bytewax", action="store_true", help="run only aiowax and plain Python")
    p.add_argument("--json", type=Path, help="also write every raw result to this file")
    opts = p.parse_args()
    opts.groups = [g.strip() for g in opts.bench.split(",") if g.strip()]
    if unknown := set(opts.groups) - set(GROUPS) - set(OPT_IN):
        p.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {GROUPS + OPT_IN}")
    opts.scale = opts.scale if opts.scale is not None else (0.1 if opts.quick else 1.0)
    opts.repeat = opts.repeat or (2 if opts.quick else 3)
    opts.bytewax_releases = [v.strip() for v in opts.bytewax_releases.split(",") if v.strip()]
    if unknown := set(opts.bytewax_releases) - set(BYTEWAX_RELEASES.values()):
        p.error(f"unknown Bytewax release(s) {sorted(unknown)}")
    if opts.skip_bytewax:
        opts.bytewax_releases = []

    info = machine()  # before the runs: the git state of what is measured
    todo = jobs(opts)
    need = {j.interpreter for j in todo}
    if set(OPT_IN) & set(opts.groups):
        need |= {name for name, v in BYTEWAX_RELEASES.items() if v in opts.bytewax_releases}
    pythons = interpreters(opts, need=need)
    results = {job.key: run_job(job, pythons[job.interpreter]) for job in todo}
    extra = run_opt_in(opts, pythons)
    if not todo:  # only opt-in groups: they printed their own tables
        if opts.json:
            payload = {"machine": info, "options": vars(opts) | {"json": str(opts.json)}}
            opts.json.write_text(json.dumps(payload | extra, indent=2, default=str))
            log(f"raw results written to {opts.json}")
        sys.exit(1 if any("error" in r for runs in extra.values() for r in runs) else 0)

    releases = " and ".join(opts.bytewax_releases) or "(none)"
    print(f"\naiowax vs Bytewax {releases} vs plain Python  ({info.get('date')})")
    cpu, mem = info.get("cpu", "?"), info.get("mem_gb", "?")
    print(f"machine: {info.get('nproc')} CPUs, {cpu}, {mem} GB RAM")
    print(f"aiowax source: {info.get('git', '?')}")
    for name, python in pythons.items():
        version = probe(python, "import platform; print(platform.python_version())")
        print(f"{name} interpreter: {python} (Python {version})")
    where = probe(pythons["aiowax"], "import os, aiowax; print(os.path.dirname(aiowax.__file__))")
    print(f"aiowax imported from: {where}")
    print(
        f"options: --bench {','.join(opts.groups)} --scale {opts.scale:g} --repeat {opts.repeat}\n"
    )
    both = "bytewax " + " / ".join(BYTEWAX_RELEASES.values())
    print("RATIOS (aiowax first; for latency and memory lower is better;")
    print("        'bytewax' is the better release of each row, named beside its figure)")
    print(
        table(
            ("comparison", "aiowax", "reference", "ratio", "target", "verdict", both),
            comparisons(results),
        )
    )
    print("\nABSOLUTE FIGURES (noisy; compare the ratios)")
    print(table(("run", "items", "figures", "loop"), figures(results)))
    print("\nISSUE 16 TARGETS (Bytewax = the better release of each row)")
    print(
        table(
            ("target", "aiowax", "reference (which)", "ratio", "target", "verdict", both),
            target_rows(results),
        )
    )
    if opts.json:
        payload = {
            "machine": info,
            "options": vars(opts) | {"json": str(opts.json)},
            "results": results,
            "targets": evaluate_targets(results),
            **extra,
        }
        opts.json.write_text(json.dumps(payload, indent=2, default=str))
        log(f"raw results written to {opts.json}")
    if any("error" in r for r in results.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
