"""Bytewax 0.21.1 single-item latency: polled source -> 5 maps -> sink.

Runs in the Bytewax 0.21.1 interpreter; the flow and feeder of
`bytewax_latency.py` (0.17.2) in that release's functional API: a
``DynamicSource`` whose ``StatelessSourcePartition.next_batch`` polls a
``queue.Queue`` without blocking (``[]`` when it is empty; 0.21.1, like
0.17.2, then waits 1 ms before polling again, as its ``next_awake``
documentation says), 5 ``op.map(add_one)`` steps and a ``DynamicSink``. A
feeder thread sends one item at a time (its ``time.perf_counter_ns()``),
waits for the sink to see it, sleeps ``--gap-ms`` plus a random
0..``--jitter-ms``, and repeats. Also reports CPU time per wall second
while feeding. ``--repeat`` rounds are pooled as in `bench_latency.py`.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import benchlib
import bytewax.operators as op
from benchlib import Round, add_one
from bytewax.dataflow import Dataflow
from bytewax.inputs import DynamicSource, StatelessSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main

MAPS = 5

items_q: queue.Queue[int | None] = queue.Queue()
arrived = threading.Event()
latencies_ns: list[int] = []


class QueuePartition(StatelessSourcePartition):  # type: ignore[misc]
    def next_batch(self) -> list[int]:
        try:
            item = items_q.get_nowait()
        except queue.Empty:
            return []
        if item is None:
            raise StopIteration
        return [item]


class QueueSource(DynamicSource):  # type: ignore[misc]
    def build(self, step_id: str, worker_index: int, worker_count: int) -> QueuePartition:
        return QueuePartition()


class ProbePartition(StatelessSinkPartition):  # type: ignore[misc]
    def write_batch(self, items: list[int]) -> None:
        now = time.perf_counter_ns()
        for v in items:
            latencies_ns.append(now - (v - MAPS))
        arrived.set()


class ProbeSink(DynamicSink):  # type: ignore[misc]
    def build(self, step_id: str, worker_index: int, worker_count: int) -> ProbePartition:
        return ProbePartition()


def feed(gaps: list[float], stats: dict[str, Any]) -> None:
    time.sleep(0.05)  # let the worker start
    wall0, cpu0 = time.perf_counter(), time.process_time()
    try:
        for gap in gaps:
            arrived.clear()
            items_q.put(time.perf_counter_ns())
            if not arrived.wait(10):
                stats["error"] = "an item did not arrive within 10 s"
                break
            time.sleep(gap)
    finally:
        stats["wall"] = time.perf_counter() - wall0
        stats["cpu"] = time.process_time() - cpu0
        items_q.put(None)


def measure(flow: Dataflow, warmup: int, gaps: list[float]) -> Round:
    latencies_ns.clear()
    stats: dict[str, Any] = {}
    feeder = threading.Thread(target=feed, args=(gaps, stats))
    feeder.start()
    run_main(flow)
    feeder.join()
    if "error" in stats:
        raise SystemExit(stats["error"])
    return latencies_ns[warmup:], stats["cpu"] / stats["wall"]


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=2_000, repeat=3)
    benchlib.latency_options(p)
    args = p.parse_args()
    gaps = benchlib.idle_gaps(args.warmup + args.items, args.gap_ms, args.jitter_ms)
    flow = Dataflow("latency")
    s = op.input("queue", flow, QueueSource())
    for i in range(MAPS):
        s = op.map(f"add_one_{i}", s, add_one)
    op.output("probe", s, ProbeSink())
    rounds = [measure(flow, args.warmup, gaps) for _ in range(args.repeat)]
    result: dict[str, Any] = {
        "bench": "latency",
        "contestant": "bytewax",
        "loop": "bytewax worker (polling)",
        "items": args.items,
        "warmup": args.warmup,
        "gap_ms": args.gap_ms,
        "jitter_ms": args.jitter_ms,
        "maps": MAPS,
        **benchlib.pooled_latency(rounds),
        "versions": {"bytewax": benchlib.package_version("bytewax")},
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()
