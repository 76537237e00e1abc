"""Bytewax 0.21.1 latency under load: open-loop paced source -> N x map -> sink.

Runs in the Bytewax 0.21.1 interpreter; the flow, source schedule and
probe of `bench_latency_load.py` in that release's functional API: a
``DynamicSource`` whose ``StatelessSourcePartition.next_batch`` hands out
the items due by now (`curvelib.Pacer`, at most ``--cap`` per call, ``[]``
when none is due), 5 ``op.map(add_one)`` steps and a ``DynamicSink``
measuring ``now - due`` per item (`curvelib.LoadProbe`). Bytewax has no
async sources, so it cannot await the next item; after an empty batch its
worker waits until ``next_awake`` (``None``: 1 ms). ``--wake``:

- ``spin`` (default): after an empty batch ``next_awake`` returns the
  current time: poll again at once (the most responsive a polled source
  can be).
- ``awake``: ``next_awake`` returns the next item's due time.

``--rate 0`` saturates (``--cap`` items per call). The first
``--warmup-s`` of items are not counted.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import benchlib
import bytewax.operators as op
import curvelib
from benchlib import add_one
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main
from curvelib import LOAD_MAPS, LoadProbe, Pacer


def awake_time(pacer: Pacer, wake: str, last_empty: bool) -> datetime | None:
    """`next_awake`: ``None`` after items (call again at once), else per ``wake``."""
    if not last_empty:
        return None
    if wake == "spin":
        return datetime.now(UTC)
    wait_ns = pacer.next_due_ns() - time.perf_counter_ns()
    return datetime.now(UTC) + timedelta(microseconds=max(0, wait_ns) / 1000)


def build(pacer: Pacer, probe: LoadProbe, wake: str, maps: int = LOAD_MAPS) -> Dataflow:
    class PacedPartition(StatelessSourcePartition):  # type: ignore[misc]
        def __init__(self) -> None:
            self.last_empty = False

        def next_batch(self) -> list[int]:
            if pacer.done():
                raise StopIteration
            batch = pacer.due()
            self.last_empty = not batch
            return batch

        def next_awake(self) -> datetime | None:
            return awake_time(pacer, wake, self.last_empty)

    class PacedSource(DynamicSource):  # type: ignore[misc]
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
            pacer.begin()
            return PacedPartition()

    class ProbePartition(StatelessSinkPartition):  # type: ignore[misc]
        def write_batch(self, items: list[int]) -> None:
            probe.received(items)

    class ProbeSink(DynamicSink):  # type: ignore[misc]
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
            return ProbePartition()

    flow = Dataflow("latency_load")
    s = op.input("paced", flow, PacedSource())
    for i in range(maps):
        s = op.map(f"add_one_{i}", s, add_one)
    op.output("probe", s, ProbeSink())
    return flow


def main() -> None:
    p = curvelib.load_parser(__doc__ or "")
    args = p.parse_args()
    run_main(build(Pacer(20_000, 0.2, args.cap), LoadProbe(args.maps), args.wake, args.maps))
    pacer, probe = Pacer(args.rate, args.duration_s, args.cap), LoadProbe(args.maps)
    flow = build(pacer, probe, args.wake, args.maps)
    cpu0 = time.process_time()
    run_main(flow)
    result = curvelib.load_result("bytewax021", args, pacer, probe, time.process_time() - cpu0)
    result["versions"] = {"bytewax": benchlib.package_version("bytewax")}
    benchlib.emit(result)


if __name__ == "__main__":
    main()
