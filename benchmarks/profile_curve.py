"""Profile one aiowax curve point: cProfile (time) or tracemalloc (memory).

Runs in the aiowax interpreter, with the options of `bench_curve.py`
(``--family``, ``--op``, ``--x``, ``--items``) plus ``--mode``:

- ``cprofile``: the run under ``cProfile``; prints the top ``--top``
  functions by internal time and by cumulative time, the calls per input
  item, and the whole run's wall time (the profiler slows it down several
  times: compare shares and call counts, not seconds).
- ``tracemalloc``: the run under ``tracemalloc``; prints the peak of
  traced memory and what is allocated when the input has all been read
  (the state then held: about the peak), by the top ``--top`` allocation
  sites (file and line), and the same at the end of the run.
- ``gc``: the run with a ``gc.callbacks`` timer: how many collections of
  each generation of the cyclic garbage collector ran and how long they
  took. With ``--gc-off`` (any mode) the run has ``gc.disable()``.

Used to explain a cost that grows faster than linearly in RESULTS.md::

    .venv/bin/python benchmarks/profile_curve.py --family keys --op fold_window \
        --x 1000000 --items 1000000 --mode cprofile
"""

from __future__ import annotations

import cProfile
import gc
import io
import pstats
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import bench_curve
import curvelib
from curvelib import CurveItems

from aiowax.testing import cluster_main, run_main


def gc_timed(run: Any) -> list[tuple[int, float]]:
    """Run ``run()``; per GC generation, the collections and the seconds they took."""
    spent = [[0, 0.0] for _ in range(3)]
    started = [0.0]

    def callback(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            entry = spent[info["generation"]]
            entry[0] += 1
            entry[1] += time.perf_counter() - started[0]

    gc.callbacks.append(callback)
    try:
        run()
    finally:
        gc.callbacks.remove(callback)
    return [(int(n), float(t)) for n, t in spent]


class SnapAtEnd:
    """The input, taking a tracemalloc snapshot once it has all been read.

    The engine then holds (nearly) all the state the input makes: the
    snapshot shows the allocation sites at about the peak.
    """

    def __init__(self, inner: Any, snaps: list[tracemalloc.Snapshot]) -> None:
        self.inner, self.snaps = inner, snaps

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[Any]:
        yield from self.inner
        self.snaps.append(tracemalloc.take_snapshot())


def main() -> None:
    p = curvelib.point_parser(__doc__ or "")
    p.add_argument("--mode", choices=("cprofile", "tracemalloc", "gc"), default="cprofile")
    p.add_argument("--gc-off", action="store_true", help="gc.disable() for the run")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--sort", default="tottime,cumulative", help="pstats sort keys to print")
    args = p.parse_args()
    data: dict[int, Any] = {}
    if args.family in ("keys", "windows") or args.op == "stateful_map":
        kind = "int" if args.op == "stateful_map" else "timed"
        data[args.items] = CurveItems(args.items, curvelib.keys_of(args), kind)
    snaps: list[tracemalloc.Snapshot] = []
    if args.mode == "tracemalloc" and args.items in data:
        data[args.items] = SnapAtEnd(data[args.items], snaps)
    sink = bench_curve.CountingSink()
    flow = bench_curve.build(args, args.items, sink, data)

    def run() -> None:
        if args.family == "workers":
            cluster_main(flow, [], 0, worker_count_per_proc=args.x)
        else:
            run_main(flow)

    if args.gc_off:
        gc.disable()
    start = time.perf_counter()
    if args.mode == "gc":
        spent = gc_timed(run)
        wall = time.perf_counter() - start
        for gen, (count, secs) in enumerate(spent):
            print(f"generation {gen}: {count} collections, {secs:.2f} s")
        print(f"in all {sum(t for _, t in spent):.2f} s of {wall:.2f} s in the cyclic GC")
    elif args.mode == "cprofile":
        prof = cProfile.Profile()
        prof.runcall(run)
        wall = time.perf_counter() - start
        calls = pstats.Stats(prof).total_calls  # type: ignore[attr-defined]
        print(f"{calls:,} calls, {calls / args.items:.1f} per input item")
        for key in args.sort.split(","):
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats(key).print_stats(args.top)
            print(f"--- sorted by {key} ---")
            print(out.getvalue())
    else:
        tracemalloc.start(1)
        run()
        wall = time.perf_counter() - start
        current, peak = tracemalloc.get_traced_memory()
        end = tracemalloc.take_snapshot()
        tracemalloc.stop()
        print(f"traced at the end {current / 2**20:.1f} MB, peak {peak / 2**20:.1f} MB")
        for what, snap in (("when the input ran out", snaps), ("at the end", [end])):
            if not snap:
                continue
            stats = snap[0].statistics("lineno")
            total = sum(st.size for st in stats)
            print(f"--- allocated {what}: {total / 2**20:.1f} MB in all; top sites ---")
            for stat in stats[: args.top]:
                print(stat)
    what = "" if args.mode == "gc" else " (profiled)"
    print(f"wall {wall:.2f} s, {args.items / wall:,.0f} items/s{what}, sink saw {sink.count:,}")


if __name__ == "__main__":
    main()
