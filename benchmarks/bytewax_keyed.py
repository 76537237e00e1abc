"""Bytewax 0.17.2 keyed state: TestingInput of (key, value) -> stateful op -> null sink.

Runs in the Bytewax 0.17.2 interpreter; the same input, functions and
options as `bench_keyed.py`, in that release's names: ``TestingInput``,
``stateful_map(step_id, builder, mapper)`` (0.17.2 calls the builder with no
argument, like aiowax), ``reduce(step_id, reducer, is_complete)``,
``batch(step_id, max_size, timeout)`` (0.17.2 has it), ``DynamicOutput`` /
``StatelessSink``. Times ``bytewax.testing.run_main(flow)``, or
``cluster_main(flow, [], 0, worker_count_per_proc=N)`` with ``--workers N``
(N worker threads in this process). With ``--recovery`` each run gets a
fresh directory initialised with ``bytewax.recovery.init_db_dir(tmp,
workers)`` (outside the timing; 0.17.2 refuses an empty directory with
``NoPartitionsError``) and ``RecoveryConfig(tmp)``; ``--epoch-s`` is passed
as ``epoch_interval``.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import benchlib
from benchlib import KeyedItems, add_pairs, count_reached, running_sum, zero
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicOutput, StatelessSink
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingInput, TestingOutput, cluster_main, run_main

OPS = ("stateful_map", "reduce", "batch")


class CountingSink(StatelessSink):  # type: ignore[misc]
    """A null sink: counts what it is handed and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0

    def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)


class CountingOutput(DynamicOutput):  # type: ignore[misc]
    """One counting sink per worker."""

    def __init__(self) -> None:
        self.sinks: list[CountingSink] = []

    def build(self, worker_index: int, worker_count: int) -> CountingSink:
        sink = CountingSink()
        self.sinks.append(sink)
        return sink

    @property
    def count(self) -> int:
        return sum(s.count for s in self.sinks)


def build_flow(args: Any, items: int, out: Any) -> Dataflow:
    flow = Dataflow()
    kind = "pair" if args.op == "reduce" else "int"
    flow.input("inp", TestingInput(KeyedItems(items, kind, args.keys), batch_size=args.batch_size))
    if args.op == "stateful_map":
        flow.stateful_map("running_sum", zero, running_sum)
    elif args.op == "reduce":
        flow.reduce("add_pairs", add_pairs, count_reached)
    else:
        flow.batch("batch", args.max_size, timedelta(seconds=args.timeout_s))
    flow.output("out", out)
    return flow


def last_epoch(db_dir: Path) -> int:
    """The last epoch the run committed to its recovery partitions."""
    epochs = [0]
    for part in db_dir.glob("part-*.sqlite3"):
        with sqlite3.connect(part) as conn:
            query = "SELECT COALESCE(MAX(commit_epoch), 0) FROM commits"
            epochs.append(conn.execute(query).fetchone()[0])
    return max(epochs)


def run_once(args: Any, items: int, out: Any, epochs: list[int] | None = None) -> None:
    flow = build_flow(args, items, out)
    options: dict[str, Any] = {}
    if args.epoch_s is not None:
        options["epoch_interval"] = timedelta(seconds=args.epoch_s)
    db_dir = None
    if args.recovery:
        db_dir = Path(tempfile.mkdtemp(prefix="bytewax-bench-recovery-"))
        init_db_dir(db_dir, args.workers)
        options["recovery_config"] = RecoveryConfig(db_dir)
    try:
        if args.workers == 1:
            run_main(flow, **options)
        else:
            cluster_main(flow, [], 0, worker_count_per_proc=args.workers, **options)
        if db_dir is not None and epochs is not None:
            epochs.append(last_epoch(db_dir))
    finally:
        if db_dir is not None:
            shutil.rmtree(db_dir, ignore_errors=True)


def reference(args: Any, items: int) -> list[Any]:
    if args.op == "stateful_map":
        return benchlib.plain_stateful_map(KeyedItems(items, "int", args.keys))
    if args.op == "reduce":
        return benchlib.plain_reduce(KeyedItems(items, "pair", args.keys))
    return benchlib.plain_batch(KeyedItems(items, "int", args.keys), args.max_size)


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000)
    p.add_argument("--op", choices=OPS, default="stateful_map")
    p.add_argument("--keys", type=int, default=benchlib.KEY_COUNT)
    p.add_argument("--batch-size", type=int, default=1000, help="source batch size")
    p.add_argument("--max-size", type=int, default=100, help="batch: max_size")
    p.add_argument("--timeout-s", type=float, default=60.0, help="batch: timeout")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--recovery", action="store_true", help="recovery on (fresh dir per run)")
    p.add_argument("--epoch-s", type=float, default=None, help="epoch interval (s)")
    p.add_argument("--check-items", type=int, default=20_000, help="items of the output check")
    args = p.parse_args()
    check_items = min(args.items, args.check_items)
    got: list[Any] = []
    run_once(args, check_items, TestingOutput(got))  # warm-up and output check
    check_ok = benchlib.by_key(got) == benchlib.by_key(reference(args, check_items))
    expected = benchlib.expected_outputs(args.op, args.items, args.keys, args.max_size)
    counts: list[int] = []
    epochs: list[int] = []

    def timed() -> None:
        out = CountingOutput()
        run_once(args, args.items, out, epochs)
        counts.append(out.count)

    times, _ = benchlib.time_runs(timed, args.repeat)
    result = benchlib.rate_result(
        "keyed",
        "bytewax",
        args.items,
        times,
        counts,
        expected,
        op=args.op,
        keys=args.keys,
        batch_size=args.batch_size,
        workers=args.workers,
        recovery=args.recovery,
        epoch_s=args.epoch_s,
        last_epochs=epochs,
        check_items=check_items,
        check_ok=check_ok,
    )
    result["versions"] = {"bytewax": benchlib.package_version("bytewax")}
    benchlib.emit(result)


if __name__ == "__main__":
    main()
