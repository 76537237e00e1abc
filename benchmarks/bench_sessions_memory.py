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

The figure grows with speed: a session stays open about ``gap`` of wall time
after its item, so a run holds about (items placed per second) x ``gap``
sessions at once, and a step that places items twice as fast holds twice as
many. So the run also reports ``open_sessions_peak``, the most sessions open
at once (items the source handed out minus sessions emitted, sampled every
10 ms from a thread; in-flight items count as open), and the peak per
thousand of them. That rate is not the run's mean: in the first ``gap`` no
session is due, so the step only places items, several times faster than
once it also closes them, and the peak is about that placing rate x ``gap``
(then the sessions due come faster than the step closes them, and it closes
them in ticks of a bounded size, `op.CLOSE_PER_TICK`, taking items in
between). ``--gap-s 3600`` keeps every session open to the end of
the input: then the peak is that of N open sessions whatever the speed, the
same in every engine (the Bytewax scripts take ``--gap-s`` too).

``--rate N`` (items/s) paces the input instead, at the same rate in every
engine, so the peak is that of the user's input rate rather than of the
engine's speed: open loop, item ``n`` is due ``n / N`` s after the source is
built; each ``next_batch`` hands out the items due by now (at most
``--batch-size``, ``[]`` when none is due) and ``next_awake`` returns the next
item's due time, so the worker sleeps rather than spins (`benchlib.PacedItems`
in a ``DynamicSource``). The items are the same (``KeyedItems(N, "unique")``,
the same event times); only when they arrive differs. A run then holds about
N x ``gap`` open sessions, and reports the achieved rate
(``achieved_items_per_s``: items over the time from the first item's due time
to the last item handed out; about N if the engine kept up) and how far the
source fell behind (``source_lag_s``: the last item's hand-out time minus its
due time). The Bytewax scripts take ``--rate`` too, with the same semantics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import benchlib
from benchlib import KeyedItems, OpenSampler, PacedItems, PeakRss, add_timed, event_time

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.inputs import DynamicSource, StatelessSourcePartition
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


class WatchedSource(TestingSource):
    """A `TestingSource` whose partitions can be asked how many items they handed out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parts: list[Any] = []

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> Any:
        part = super().build_part(now, for_part, resume_state)
        self.parts.append(part)
        return part


class PacedPartition(StatelessSourcePartition[Any]):
    """Hands out the items due by now (`benchlib.PacedItems`); sleeps until the next."""

    def __init__(self, pacer: PacedItems) -> None:
        self.pacer = pacer

    def next_batch(self, sched: Any) -> list[Any]:
        if self.pacer.done():
            raise StopIteration
        return self.pacer.due()

    def next_awake(self) -> datetime | None:
        return self.pacer.next_awake()


class PacedSource(DynamicSource[Any]):
    """``KeyedItems`` at ``--rate`` items/s: one worker, one partition."""

    def __init__(self, pacer: PacedItems) -> None:
        self.pacer = pacer

    def build(self, now: Any, worker_index: int, worker_count: int) -> PacedPartition:
        self.pacer.begin()
        return PacedPartition(self.pacer)


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000, repeat=1)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--gap-s", type=float, default=1.0)
    p.add_argument("--rate", type=float, default=0.0, help="items/s (default 0: unpaced)")
    args = p.parse_args()
    flow = Dataflow()
    items = KeyedItems(args.items, "unique")
    pacer: PacedItems | None = None
    handed: Callable[[], int]
    if args.rate > 0:
        pacer = PacedItems(items, args.items, args.rate, args.batch_size)
        flow.input("inp", PacedSource(pacer))
        handed = lambda: pacer.sent  # noqa: E731
    else:
        source = WatchedSource(items, batch_size=args.batch_size)
        flow.input("inp", source)
        handed = lambda: sum(part.snapshot() for part in source.parts)  # noqa: E731
    clock = EventClockConfig(event_time, wait_for_system_duration=timedelta(0))
    windower = SessionWindow(gap=timedelta(seconds=args.gap_s))
    flow.reduce_window("add_timed", clock, windower, add_timed)
    sink = CountingSink()
    flow.output("out", sink)
    start = time.perf_counter()
    with PeakRss() as rss, OpenSampler(handed, lambda: sink.partition.count) as opened:
        run_main(flow)
    wall = time.perf_counter() - start
    memo: int | None = None
    try:
        from aiowax._engine.ops.windows import state
    except ImportError:  # private: may move
        pass
    else:
        memo = state.FORGOTTEN_WATERMARKS
    peak_mb = (rss.peak_kb - rss.baseline_kb) / 1024
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
        "rate": args.rate or None,
        **(pacer.as_dict() if pacer else {}),
        "forgotten_watermarks_bound": memo,
        "open_sessions_peak": opened.peak,
        "peak_mb_per_1000_open": peak_mb / max(1, opened.peak) * 1000,
        "versions": {
            "aiowax": aiowax.__version__,
            "uvloop": benchlib.package_version("uvloop"),
        },
        **rss.as_dict(),
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()
