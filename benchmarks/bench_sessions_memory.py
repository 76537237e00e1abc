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
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta
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


class WatchedSource(TestingSource):
    """A `TestingSource` whose partitions can be asked how many items they handed out."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.parts: list[Any] = []

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> Any:
        part = super().build_part(now, for_part, resume_state)
        self.parts.append(part)
        return part


class OpenSessions:
    """The most sessions open at once: items read minus sessions emitted, every 10 ms."""

    def __init__(self, source: WatchedSource, sink: CountingSink) -> None:
        self.source, self.sink = source, sink
        self.peak = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.done.wait(0.01):
            read = sum(part.snapshot() for part in self.source.parts)
            self.peak = max(self.peak, read - self.sink.partition.count)

    def __enter__(self) -> OpenSessions:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000, repeat=1)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--gap-s", type=float, default=1.0)
    args = p.parse_args()
    flow = Dataflow()
    source = WatchedSource(KeyedItems(args.items, "unique"), batch_size=args.batch_size)
    flow.input("inp", source)
    clock = EventClockConfig(event_time, wait_for_system_duration=timedelta(0))
    windower = SessionWindow(gap=timedelta(seconds=args.gap_s))
    flow.reduce_window("add_timed", clock, windower, add_timed)
    sink = CountingSink()
    flow.output("out", sink)
    start = time.perf_counter()
    with PeakRss() as rss, OpenSessions(source, sink) as opened:
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
