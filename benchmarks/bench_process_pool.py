"""A CPU-heavy map step in the event loop's thread against ``processes=2``.

Runs in the aiowax interpreter (the dev venv is enough)::

    .venv/bin/python benchmarks/bench_process_pool.py

The flow: ``TestingSource(range(--items), --batch-size)`` -> ``map`` of
`cpu_heavy` (about 50 us of pure Python per item) -> a sink that only
counts and sums what it gets. The plain step and the step with
``processes=--processes`` take turns, ``--repeat`` times each; the best wall
time of each is kept (the whole ``run_main``, start and stop of the worker
processes included). Printed: the cost of one `cpu_heavy` call, items/s of
both, their ratio, and what a run of one item costs with the processes (their
start-up). The output of every run is checked against the plain reference.
The last line of stdout is the JSON of the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from typing import Any

#: Rounds of `cpu_heavy`'s loop: about 50 us on the 2-core machine of RESULTS.md.
ROUNDS = 625


def cpu_heavy(x: int) -> int:
    """About 50 us of pure Python: a linear congruential generator run ROUNDS times."""
    acc = x
    for _ in range(ROUNDS):
        acc = (acc * 1103515245 + 12345) & 0x7FFFFFFF
    return acc


def run_flow(items: int, batch_size: int, processes: int | None) -> tuple[int, int]:
    """Run the flow once; return (count, sum) of what reached the sink."""
    from aiowax.dataflow import Dataflow
    from aiowax.outputs import DynamicSink, StatelessSinkPartition
    from aiowax.testing import TestingSource, run_main

    seen = [0, 0]

    class _Counting(StatelessSinkPartition[int]):
        def write_batch(self, items: list[int]) -> None:
            seen[0] += len(items)
            seen[1] += sum(items)

    class _NullSink(DynamicSink[int]):
        def build(self, worker_index: int, worker_count: int) -> _Counting:
            return _Counting()

    flow = Dataflow()
    flow.input("inp", TestingSource(range(items), batch_size))
    flow.map("cpu_heavy", cpu_heavy, processes=processes)
    flow.output("out", _NullSink())
    run_main(flow)
    return seen[0], seen[1]


def per_call_us(calls: int = 20_000) -> float:
    start = time.perf_counter()
    for i in range(calls):
        cpu_heavy(i)
    return (time.perf_counter() - start) / calls * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--items", type=int, default=100_000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3, help="runs of each; the best is kept")
    args = p.parse_args()

    expected = (args.items, sum(cpu_heavy(i) for i in range(args.items)))
    times: dict[str, list[float]] = {"plain": [], "processes": []}
    for _ in range(args.repeat):
        for name, procs in (("plain", None), ("processes", args.processes)):
            start = time.perf_counter()
            got = run_flow(args.items, args.batch_size, procs)
            times[name].append(time.perf_counter() - start)
            assert got == expected, (name, got, expected)
            assert not multiprocessing.active_children()
    startup = min(
        _timed(lambda: run_flow(1, args.batch_size, args.processes)) for _ in range(args.repeat)
    )
    plain = args.items / min(times["plain"])
    pooled = args.items / min(times["processes"])
    result: dict[str, Any] = {
        "cpu_heavy_us": round(per_call_us(), 1),
        "items": args.items,
        "batch_size": args.batch_size,
        "processes": args.processes,
        "cores": os.cpu_count(),
        "plain_items_per_s": round(plain),
        "processes_items_per_s": round(pooled),
        "ratio": round(pooled / plain, 2),
        "one_item_run_with_processes_s": round(startup, 3),
        "plain_times_s": [round(t, 3) for t in times["plain"]],
        "processes_times_s": [round(t, 3) for t in times["processes"]],
    }
    print(f"cpu_heavy: {result['cpu_heavy_us']} us per call; {os.cpu_count()} cores")
    print(f"plain step:        {plain:>10,.0f} items/s (best of {args.repeat})")
    print(f"processes={args.processes}:       {pooled:>10,.0f} items/s (best of {args.repeat})")
    print(f"ratio:             {pooled / plain:>10.2f}x")
    print(f"a 1-item run with processes={args.processes}: {startup:.3f} s (start-up and stop)")
    print(json.dumps(result))


def _timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
