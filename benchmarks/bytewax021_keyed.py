"""Bytewax 0.21.1 keyed state: TestingSource of (key, value) -> stateful op -> null sink.

Runs in the Bytewax 0.21.1 interpreter; the same input, functions and
options as `bench_keyed.py` (aiowax) and `bytewax_keyed.py` (0.17.2), in
that release's functional API (``import bytewax.operators as op``). The
``(str key, value)`` items of `benchlib.KeyedItems` already are a keyed
stream, so no ``key_on`` step is added. What each ``--op`` becomes:

- ``stateful_map``: ``op.stateful_map("running_sum", s, mapper)``. 0.21.1
  has no builder: the mapper gets ``None`` as a new key's state, so the
  mapper is `sm_mapper`, which calls `benchlib.zero` on ``None`` and then
  `benchlib.running_sum` (one extra Python call per item).
- ``reduce``: 0.21.1's ``reduce_final`` only emits at the end of input and
  has no ``is_complete``, so 0.17.2's ``reduce(step_id, reducer,
  is_complete)`` becomes ``op.stateful_flat_map("add_pairs", s,
  reduce_mapper)``: the first value is the accumulator, later ones go
  through `benchlib.add_pairs`; when `benchlib.count_reached` says so the
  accumulator is emitted and the state discarded (``None``), which is what
  0.17.2's ``reduce`` does.
- ``batch``: ``op.collect("batch", s, timeout, max_size)``, 0.21.1's name
  (and argument order) for 0.17.2's ``batch(step_id, max_size, timeout)``.

Times ``bytewax.testing.run_main(flow)``, or ``cluster_main(flow, [], 0,
worker_count_per_proc=N)`` with ``--workers N``. With ``--recovery`` each
run gets a fresh directory initialised with
``bytewax.recovery.init_db_dir(tmp, workers)`` (outside the timing) and
``RecoveryConfig(tmp)``; ``--epoch-s`` is passed as ``epoch_interval``.
The recovery partitions have the same ``commits(commit_epoch)`` table as
0.17.2's. Before the timed runs a small run's output is compared, key by
key, with the plain-Python reference (``check_ok``).
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import benchlib
import bytewax.operators as op
from benchlib import KeyedItems, add_pairs, count_reached, running_sum, zero
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSink, TestingSource, cluster_main, run_main

OPS = ("stateful_map", "reduce", "batch")


def sm_mapper(state: int | None, value: int) -> tuple[int, int]:
    """`benchlib.running_sum` with 0.21.1's ``None`` for a new key's state."""
    return running_sum(zero() if state is None else state, value)


def reduce_mapper(
    acc: tuple[int, int] | None, value: tuple[int, int]
) -> tuple[tuple[int, int] | None, tuple[tuple[int, int], ...]]:
    """0.17.2's ``reduce(add_pairs, count_reached)`` as a stateful_flat_map mapper."""
    acc = value if acc is None else add_pairs(acc, value)
    if count_reached(acc):
        return None, (acc,)
    return acc, ()


class CountingPartition(StatelessSinkPartition):  # type: ignore[misc]
    """A null sink: counts what it is handed and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0

    def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)


class CountingSink(DynamicSink):  # type: ignore[misc]
    """One counting partition per worker."""

    def __init__(self) -> None:
        self.parts: list[CountingPartition] = []

    def build(self, step_id: str, worker_index: int, worker_count: int) -> CountingPartition:
        part = CountingPartition()
        self.parts.append(part)
        return part

    @property
    def count(self) -> int:
        return sum(p.count for p in self.parts)


def build_flow(args: Any, items: int, sink: Any) -> Dataflow:
    flow = Dataflow("keyed")
    kind = "pair" if args.op == "reduce" else "int"
    source = TestingSource(KeyedItems(items, kind, args.keys), batch_size=args.batch_size)
    s = op.input("inp", flow, source)
    if args.op == "stateful_map":
        s = op.stateful_map("running_sum", s, sm_mapper)
    elif args.op == "reduce":
        s = op.stateful_flat_map("add_pairs", s, reduce_mapper)
    else:
        s = op.collect("batch", s, timedelta(seconds=args.timeout_s), args.max_size)
    op.output("out", s, sink)
    return flow


def last_epoch(db_dir: Path) -> int:
    """The last epoch the run committed to its recovery partitions."""
    epochs = [0]
    for part in db_dir.glob("part-*.sqlite3"):
        with sqlite3.connect(part) as conn:
            query = "SELECT COALESCE(MAX(commit_epoch), 0) FROM commits"
            epochs.append(conn.execute(query).fetchone()[0])
    return max(epochs)


def run_once(args: Any, items: int, sink: Any, epochs: list[int] | None = None) -> None:
    flow = build_flow(args, items, sink)
    options: dict[str, Any] = {}
    if args.epoch_s is not None:
        options["epoch_interval"] = timedelta(seconds=args.epoch_s)
    db_dir = None
    if args.recovery:
        db_dir = Path(tempfile.mkdtemp(prefix="bytewax021-bench-recovery-"))
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
