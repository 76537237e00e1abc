"""Peak memory of session windows over 1,000,000 keys that each send one item.

Runs in the aiowax interpreter: ``TestingSource(KeyedItems(N, "unique"),
batch_size=1000)`` -- item ``i`` has its own key ``u{i}`` and value
``(ALIGN + i ms, i)`` -- -> ``reduce_window`` on
``EventClockConfig(benchlib.event_time, wait_for_system_duration=0)`` with
``SessionWindow(gap=1 s)`` and reducer `benchlib.add_timed` -> a null sink
counting the emitted sessions (one per key). A key's only session closes
once its watermark, which advances with the loop clock while the key is
idle, passes ``time + gap``: about 1 s of wall time after its item.

Reported: peak RSS during the run minus RSS right before it (`benchlib.PeakRss`),
wall time, sessions emitted. aiowax forgets a key whose windows all closed
but remembers its watermark in a bounded memo
(``aiowax._engine.ops.windows.state.FORGOTTEN_WATERMARKS`` per worker), so part of the
figure is that memo; its size is reported too.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import benchlib
from benchlib import KeyedItems, PeakRss, add_timed, event_time

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSource, run_main
from aiowax.window import EventClockConfig, SessionWindow


class CountingPartition(StatelessSinkPartition[Any]):
    """A null sink: counts what it is handed and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0

    def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)


class CountingSink(DynamicSink[Any]):
    def __init__(self) -> None:
        self.partition = CountingPartition()

    def build(self, worker_index: int, worker_count: int) -> CountingPartition:
        return self.partition


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000, repeat=1)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--gap-s", type=float, default=1.0)
    args = p.parse_args()
    flow = Dataflow()
    flow.input("inp", TestingSource(KeyedItems(args.items, "unique"), batch_size=args.batch_size))
    clock = EventClockConfig(event_time, wait_for_system_duration=timedelta(0))
    windower = SessionWindow(gap=timedelta(seconds=args.gap_s))
    flow.reduce_window("add_timed", clock, windower, add_timed)
    sink = CountingSink()
    flow.output("out", sink)
    start = time.perf_counter()
    with PeakRss() as rss:
        run_main(flow)
    wall = time.perf_counter() - start
    try:
        from aiowax._engine.ops.windows.state import FORGOTTEN_WATERMARKS as memo
    except ImportError:  # private: may move
        memo = None
    result: dict[str, Any] = {
        "bench": "sessions_memory",
        "contestant": "aiowax",
        "items": args.items,
        "batch_size": args.batch_size,
        "gap_s": args.gap_s,
        "sessions": sink.partition.count,
        "kept_ok": sink.partition.count == args.items,
        "wall_s": wall,
        "items_per_s": args.items / wall,
        "forgotten_watermarks_bound": memo,
        "versions": {
            "aiowax": aiowax.__version__,
            "uvloop": benchlib.package_version("uvloop"),
        },
        **rss.as_dict(),
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()
