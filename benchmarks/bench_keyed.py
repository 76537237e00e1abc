"""aiowax keyed state: TestingSource of (key, value) -> stateful op -> null sink.

Runs in the aiowax interpreter. The input is `benchlib.KeyedItems`: item
``i`` has key ``k{i % 100}``, read in source batches of ``--batch-size``
(1000). ``--op`` picks the step, with the functions every contestant uses:

- ``stateful_map``: builder `benchlib.zero`, mapper `benchlib.running_sum`;
- ``reduce``: values ``(1, i)``, reducer `benchlib.add_pairs`, is_complete
  `benchlib.count_reached` (every 10th value of a key);
- ``batch``: ``max_size=--max-size`` (100), timeout ``--timeout-s`` (60 s,
  so only the size and the end of input emit).

Times ``aiowax.testing.run_main(flow)`` (uvloop), or ``cluster_main(flow,
[], 0, worker_count_per_proc=N)`` with ``--workers N``. With ``--recovery``
each run gets a fresh recovery directory (``init_db_dir(tmp, workers)``,
outside the timing) and ``RecoveryConfig(tmp)``; ``--epoch-s`` sets the
epoch interval (default: the engine's, 10 s). Before the timed runs a small
run collects its output and compares it, key by key, with the plain-Python
reference (`benchlib.plain_stateful_map` ...): ``check_ok``.
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

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.recovery import RecoveryConfig, init_db_dir
from aiowax.testing import TestingSink, TestingSource, cluster_main, run_main

OPS = ("stateful_map", "reduce", "batch")


class CountingPartition(StatelessSinkPartition[Any]):
    """A null sink: counts what it is handed and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0

    def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)


class CountingSink(DynamicSink[Any]):
    """One counting partition per worker."""

    def __init__(self) -> None:
        self.parts: list[CountingPartition] = []

    def build(self, worker_index: int, worker_count: int) -> CountingPartition:
        part = CountingPartition()
        self.parts.append(part)
        return part

    @property
    def count(self) -> int:
        return sum(p.count for p in self.parts)


def build_flow(args: Any, items: int, sink: Any) -> Dataflow:
    flow = Dataflow()
    kind = "pair" if args.op == "reduce" else "int"
    flow.input("inp", TestingSource(KeyedItems(items, kind, args.keys), batch_size=args.batch_size))
    if args.op == "stateful_map":
        flow.stateful_map("running_sum", zero, running_sum)
    elif args.op == "reduce":
        flow.reduce("add_pairs", add_pairs, count_reached)
    else:
        flow.batch("batch", args.max_size, timedelta(seconds=args.timeout_s))
    flow.output("out", sink)
    return flow


def last_epoch(db_dir: Path) -> int:
    """The last epoch the run committed to its recovery partitions."""
    epochs = [0]
    for part in db_dir.glob("part-*.sqlite3"):
        with sqlite3.connect(part) as conn:
            epochs.append(conn.execute("SELECT COALESCE(MAX(epoch), 0) FROM commits").fetchone()[0])
    return max(epochs)


def run_once(args: Any, items: int, sink: Any, epochs: list[int] | None = None) -> None:
    flow = build_flow(args, items, sink)
    options: dict[str, Any] = {}
    if args.epoch_s is not None:
        options["epoch_interval"] = timedelta(seconds=args.epoch_s)
    db_dir = None
    if args.recovery:
        db_dir = Path(tempfile.mkdtemp(prefix="aiowax-bench-recovery-"))
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


def keyed_options(p: Any) -> None:
    """The options (`bytewax_keyed.py` takes the same ones)."""
    p.add_argument("--op", choices=OPS, default="stateful_map")
    p.add_argument("--keys", type=int, default=benchlib.KEY_COUNT)
    p.add_argument("--batch-size", type=int, default=1000, help="source batch size")
    p.add_argument("--max-size", type=int, default=100, help="batch: max_size")
    p.add_argument("--timeout-s", type=float, default=60.0, help="batch: timeout")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--recovery", action="store_true", help="recovery on (fresh dir per run)")
    p.add_argument("--epoch-s", type=float, default=None, help="epoch interval (s)")
    p.add_argument("--check-items", type=int, default=20_000, help="items of the output check")


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000)
    keyed_options(p)
    args = p.parse_args()
    check_items = min(args.items, args.check_items)
    got: list[Any] = []
    run_once(args, check_items, TestingSink(got))  # warm-up and output check
    check_ok = benchlib.by_key(got) == benchlib.by_key(reference(args, check_items))
    expected = benchlib.expected_outputs(args.op, args.items, args.keys, args.max_size)
    counts: list[int] = []
    epochs: list[int] = []

    def timed() -> None:
        sink = CountingSink()
        run_once(args, args.items, sink, epochs)
        counts.append(sink.count)

    times, _ = benchlib.time_runs(timed, args.repeat)
    result = benchlib.rate_result(
        "keyed",
        "aiowax",
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
    result["versions"] = {
        "aiowax": aiowax.__version__,
        "uvloop": benchlib.package_version("uvloop"),
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()
