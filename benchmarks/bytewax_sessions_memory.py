"""Bytewax 0.17.2 peak memory of session windows over 1,000,000 one-item keys.

Runs in the Bytewax 0.17.2 interpreter; the same input, clock, window and
reducer as `bench_sessions_memory.py` (``TestingInput``,
``reduce_window(step_id, EventClockConfig(...), SessionWindow(gap=1 s),
reducer)``), a null sink counting the sessions. Peak RSS minus the RSS right
before the run, as in `bench_memory.py`.

``--rate N`` (items/s) paces the input as `bench_sessions_memory.py` does,
with the same semantics: a ``DynamicInput`` whose
``StatelessSource`` hands out, per ``next_batch``, the items of
``KeyedItems(N, "unique")`` due by now (item ``n`` is due ``n / N`` s after
the source is built; at most ``--batch-size``; ``[]`` when none is due) and
``next_awake`` returns the next item's due time, so the worker sleeps rather
than spins (`benchlib.PacedItems`). Then the run also reports
``open_sessions_peak`` (items handed out minus sessions emitted, sampled
every 10 ms from a thread, `benchlib.OpenSampler`), the peak per thousand of
them, the achieved rate and the source's lag (did the engine keep up?).
Without ``--rate`` the input is ``TestingInput`` as before and those fields
are absent.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from datetime import datetime, timedelta
from typing import Any

import benchlib
from benchlib import KeyedItems, OpenSampler, PacedItems, PeakRss, add_timed, event_time
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicInput, StatelessSource
from bytewax.outputs import DynamicOutput, StatelessSink
from bytewax.testing import TestingInput, run_main
from bytewax.window import EventClockConfig, SessionWindow


class CountingSink(StatelessSink):  # type: ignore[misc]
    """A null sink: counts what it is handed and keeps nothing."""

    def __init__(self) -> None:
        self.count = 0

    def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)


class CountingOutput(DynamicOutput):  # type: ignore[misc]
    def __init__(self) -> None:
        self.sink = CountingSink()

    def build(self, worker_index: int, worker_count: int) -> CountingSink:
        return self.sink


class PacedPartition(StatelessSource):  # type: ignore[misc]
    """Hands out the items due by now (`benchlib.PacedItems`); sleeps until the next."""

    def __init__(self, pacer: PacedItems) -> None:
        self.pacer = pacer

    def next_batch(self) -> list[Any]:
        if self.pacer.done():
            raise StopIteration
        return self.pacer.due()

    def next_awake(self) -> datetime | None:
        return self.pacer.next_awake()


class PacedSource(DynamicInput):  # type: ignore[misc]
    """``KeyedItems`` at ``--rate`` items/s: one worker, one partition."""

    def __init__(self, pacer: PacedItems) -> None:
        self.pacer = pacer

    def build(self, worker_index: int, worker_count: int) -> PacedPartition:
        self.pacer.begin()
        return PacedPartition(self.pacer)


def open_fields(sampler: OpenSampler, rss: PeakRss) -> dict[str, Any]:
    """``open_sessions_peak`` and the peak per thousand of them, as aiowax reports."""
    peak_mb = (rss.peak_kb - rss.baseline_kb) / 1024
    return {
        "open_sessions_peak": sampler.peak,
        "open_sessions_samples": sampler.samples,
        "peak_mb_per_1000_open": peak_mb / max(1, sampler.peak) * 1000,
    }


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000, repeat=1)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--gap-s", type=float, default=1.0)
    p.add_argument("--rate", type=float, default=0.0, help="items/s (default 0: unpaced)")
    args = p.parse_args()
    flow = Dataflow()
    items = KeyedItems(args.items, "unique")
    pacer: PacedItems | None = None
    if args.rate > 0:
        pacer = PacedItems(items, args.items, args.rate, args.batch_size)
        flow.input("inp", PacedSource(pacer))
    else:
        flow.input("inp", TestingInput(items, batch_size=args.batch_size))
    clock = EventClockConfig(event_time, wait_for_system_duration=timedelta(0))
    windower = SessionWindow(gap=timedelta(seconds=args.gap_s))
    flow.reduce_window("add_timed", clock, windower, add_timed)
    out = CountingOutput()
    flow.output("out", out)
    start = time.perf_counter()
    sampler = OpenSampler(lambda: pacer.sent if pacer else 0, lambda: out.sink.count)
    with PeakRss() as rss, sampler if pacer else nullcontext():
        run_main(flow)
    wall = time.perf_counter() - start
    result: dict[str, Any] = {
        "bench": "sessions_memory",
        "contestant": "bytewax",
        "items": args.items,
        "batch_size": args.batch_size,
        "gap_s": args.gap_s,
        "sessions": out.sink.count,
        "kept_ok": out.sink.count == args.items,
        "wall_s": wall,
        "items_per_s": args.items / wall,
        "rate": args.rate or None,
        **(pacer.as_dict() if pacer else {}),
        **(open_fields(sampler, rss) if pacer else {}),
        "versions": {"bytewax": benchlib.package_version("bytewax")},
        **rss.as_dict(),
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()
