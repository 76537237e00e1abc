"""aiowax latency under load: open-loop paced source -> N x map(add_one) -> sink.

Runs in the aiowax interpreter; ``latency_load.py`` calls it. The source
offers ``--rate`` items/s for ``--duration-s`` seconds whatever the flow
does (open loop, `curvelib.Pacer`): each call hands out every item due by
now, at most ``--cap`` (1000), each item being its due time
(``perf_counter_ns``); the sink (`curvelib.LoadProbe`) takes ``now - due``
as the item's latency, so time an item waited because the flow was behind
counts. ``--rate 0`` saturates (``--cap`` items every call): the items/s
the sink then sees is the maximum throughput.

How the source waits for the next item (``--wake``):

- ``spin`` (default): ``async def next_batch`` awaits ``asyncio.sleep(0)``
  until an item is due: the source is as responsive as the loop allows,
  and the steps run between its polls.
- ``awake``: a plain ``next_batch`` returning ``[]`` when nothing is due;
  after an empty batch ``next_awake`` returns the next item's due time (a
  loop timer, about 1 ms granular on uvloop), after items ``None`` (call
  again at once), as the Bytewax variants do.

The first ``--warmup-s`` of items are not counted. Runs on uvloop
(``aiowax.testing.run_main``). ``--maps`` sets the number of map steps (5); ``--loop asyncio`` runs
``asyncio.run(aiowax.run(flow))`` instead, and ``--profile-loop`` does so
under cProfile, to count event-loop iterations and task steps.

``--contestant plain`` is the floor and the noise reference: no engine, one
loop polling the same schedule (spinning, like ``spin``), mapping each
batch ``--maps`` times with list comprehensions and handing it to the same
probe. What it shows beyond a few microseconds is the machine (other
processes taking the core), not an engine.
"""

from __future__ import annotations

import asyncio
import cProfile
import pstats
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import benchlib
import curvelib
from benchlib import add_one
from curvelib import LOAD_MAPS, LoadProbe, Pacer

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.inputs import DynamicSource, StatelessSourcePartition
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import run_main


def build(pacer: Pacer, probe: LoadProbe, wake: str, maps: int = LOAD_MAPS) -> Dataflow:
    class SpinPartition(StatelessSourcePartition[int]):
        async def next_batch(self, sched: Any) -> list[int]:
            while True:
                if pacer.done():
                    raise StopAsyncIteration
                batch = pacer.due()
                if batch:
                    return batch
                await asyncio.sleep(0)

    class AwakePartition(StatelessSourcePartition[int]):
        def __init__(self) -> None:
            self.last_empty = False

        def next_batch(self, sched: Any) -> list[int]:
            if pacer.done():
                raise StopIteration
            batch = pacer.due()
            self.last_empty = not batch
            return batch

        def next_awake(self) -> datetime | None:
            if not self.last_empty:
                return None  # call again at once
            wait_ns = pacer.next_due_ns() - time.perf_counter_ns()
            return datetime.now(UTC) + timedelta(microseconds=max(0, wait_ns) / 1000)

    class PacedSource(DynamicSource[int]):
        def build(self, now: Any, worker_index: int, worker_count: int) -> Any:
            pacer.begin()
            return SpinPartition() if wake == "spin" else AwakePartition()

    class ProbePartition(StatelessSinkPartition[int]):
        def write_batch(self, items: list[int]) -> None:
            probe.received(items)

    class ProbeSink(DynamicSink[int]):
        def build(self, worker_index: int, worker_count: int) -> ProbePartition:
            return ProbePartition()

    flow = Dataflow()
    flow.input("paced", PacedSource())
    for i in range(maps):
        flow.map(f"add_one_{i}", add_one)
    flow.output("probe", ProbeSink())
    return flow


def run_plain(pacer: Pacer, probe: LoadProbe, maps: int) -> None:
    """No engine: poll the schedule, map each batch ``maps`` times, hand it to the probe."""
    pacer.begin()
    while not pacer.done():
        batch = pacer.due()
        if batch:
            for _ in range(maps):
                batch = [add_one(x) for x in batch]
            probe.received(batch)


def loop_counts(prof: cProfile.Profile, probe: LoadProbe) -> dict[str, Any]:
    """Event-loop iterations and callbacks (task steps) from a profile of the asyncio loop.

    ``BaseEventLoop._run_once`` is one iteration; ``Handle._run`` one
    callback, mostly a task's step: their ratio is how many steps an
    iteration runs, which with the latency tells what one hop costs.
    """
    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    calls = {f"{Path(k[0]).name}:{k[2]}": v[1] for k, v in stats.items()}
    iterations = calls.get("base_events.py:_run_once", 0)
    callbacks = calls.get("events.py:_run", 0)
    return {
        "iterations": iterations,
        "callbacks": callbacks,
        "callbacks_per_iteration": callbacks / iterations if iterations else None,
        "items": probe.count,
    }


def main() -> None:
    p = curvelib.load_parser(__doc__ or "")
    p.add_argument("--contestant", choices=("aiowax", "plain"), default="aiowax")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    p.add_argument(
        "--profile-loop",
        action="store_true",
        help="run on the asyncio loop under cProfile and report loop iterations and "
        "task steps (the latencies are then the profiler's, not the engine's)",
    )
    args = p.parse_args()
    warm = Pacer(20_000, 0.2, args.cap)  # warm-up: imports, first flow
    run_main(build(warm, LoadProbe(args.maps), args.wake, args.maps))
    pacer, probe = Pacer(args.rate, args.duration_s, args.cap), LoadProbe(args.maps)
    flow = build(pacer, probe, args.wake, args.maps)
    prof = cProfile.Profile() if args.profile_loop else None
    cpu0 = time.process_time()
    if args.contestant == "plain":
        run_plain(pacer, probe, args.maps)
    elif args.loop == "asyncio" or prof is not None:
        if prof is not None:
            prof.enable()
        asyncio.run(aiowax.run(flow))
        if prof is not None:
            prof.disable()
    else:
        run_main(flow)
    cpu = time.process_time() - cpu0
    result = curvelib.load_result(args.contestant, args, pacer, probe, cpu)
    result["loop"] = "asyncio" if args.loop == "asyncio" or prof is not None else "uvloop"
    if prof is not None:
        result["loop_profile"] = loop_counts(prof, probe)
    result["versions"] = {
        "aiowax": aiowax.__version__,
        "uvloop": benchlib.package_version("uvloop"),
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()
