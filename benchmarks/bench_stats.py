"""What stats cost: the same flows with nobody reading stats, and polled (issue 14).

Runs in the aiowax interpreter. Two workloads, each as in
``bench_throughput.py`` / ``bench_keyed.py``: ``map-filter``
(TestingSource -> map add_one -> filter is_even -> null sink) and
``stateful_map`` (keys ``k0``..``k99``, a running sum). Two variants:

- ``plain``: ``aiowax.run(flow)``: stats are counted (always), nobody reads them;
- ``polled``: the flow runs under `aiowax.start_flow` while a task reads
  ``handle.stats()`` and encodes ``to_dict()`` as JSON every
  ``--poll-every`` seconds (0.25 s: four times what the live page asks,
  which polls once a second).

"Stats off" is aiowax before stats existed: run this script with an older
checkout's interpreter (``--aiowax-python`` of ``run.py`` style snapshots,
see RESULTS.md) and compare its ``plain`` figures. Variants take turns;
best of ``--repeat`` kept. All on uvloop. One JSON object per figure on
stdout, a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import anyio
import benchlib
import uvloop
from benchlib import add_one, is_even, key_names, running_sum, zero

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSource


class _Null(StatelessSinkPartition[Any]):
    def __init__(self) -> None:
        self.count = 0

    def write_batch(self, items: list[Any]) -> None:
        self.count += len(items)


class NullSink(DynamicSink[Any]):
    def __init__(self) -> None:
        self.part = _Null()

    def build(self, worker_index: int, worker_count: int) -> _Null:
        return self.part


def build(workload: str, items: int, batch_size: int) -> tuple[Dataflow, NullSink]:
    flow = Dataflow()
    sink = NullSink()
    if workload == "map-filter":
        flow.input("inp", TestingSource(range(items), batch_size=batch_size))
        flow.map("add_one", add_one)
        flow.filter("is_even", is_even)
    else:
        keys = key_names()
        flow.input(
            "inp",
            TestingSource(((keys[i % len(keys)], i) for i in range(items)), batch_size=batch_size),
        )
        flow.stateful_map("sum", zero, running_sum)
    flow.output("out", sink)
    return flow, sink


async def run_variant(
    workload: str, variant: str, items: int, batch_size: int, poll: float
) -> float:
    flow, sink = build(workload, items, batch_size)
    started = time.perf_counter()
    if variant == "plain":
        await aiowax.run(flow)
    else:
        polls = 0
        async with anyio.create_task_group() as tg:
            handle = await aiowax.start_flow(tg, flow)
            while not handle.done:
                with anyio.move_on_after(poll):
                    await handle.wait()
                json.dumps(handle.stats().to_dict())
                polls += 1
        assert polls >= 1
    elapsed = time.perf_counter() - started
    expected = items // 2 if workload == "map-filter" else items
    assert sink.part.count == expected, (sink.part.count, expected)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--poll-every", type=float, default=0.25)
    parser.add_argument("--variants", default="plain,polled")
    args = parser.parse_args()
    cases = [
        ("map-filter", 20_000_000, 1000),
        ("map-filter", 3_000_000, 1),
        ("stateful_map", 5_000_000, 1000),
    ]
    variants = args.variants.split(",")
    for workload, items, batch_size in cases:
        best: dict[str, float] = {}
        for _ in range(args.repeat):
            for variant in variants:
                elapsed = uvloop.run(
                    run_variant(workload, variant, items, batch_size, args.poll_every)
                )
                best[variant] = min(best.get(variant, float("inf")), elapsed)
        for variant in variants:
            rate = items / best[variant]
            print(json.dumps({
                "workload": workload, "batch_size": batch_size, "variant": variant,
                "items": items, "items_per_s": round(rate),
                "aiowax": aiowax.__file__,
            }), flush=True)  # fmt: skip
            print(
                f"{workload:12} batch {batch_size:>5} {variant:7} {rate:>12,.0f} items/s",
                file=sys.stderr,
                flush=True,
            )
    benchlib.environment()


if __name__ == "__main__":
    main()
