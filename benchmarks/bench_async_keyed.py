"""An async stateful_map mapper that awaits 10 ms per call: total run time.

Runs in the aiowax interpreter. ``--keys`` (100) keys x ``--per-key`` (10)
items, item ``i`` of key ``k{i % keys}`` (round robin), read by a
``TestingSource`` in batches of ``--batch-size`` (1000) -> ``stateful_map``
whose mapper is ``async def`` and does ``await asyncio.sleep(0.01)`` before
`benchlib.running_sum` -> a sink that collects the output. Reported: the
wall time of the whole ``run_main(flow)`` (uvloop), median and every run of
``--repeat``. A key's items are mapped one after the other (its state
depends on the previous call), so the floor is ``per_key x 10 ms`` (0.1 s)
if keys run concurrently, and ``keys x per_key x 10 ms`` (10 s) if not.

``--contestant plain`` is that floor in plain asyncio: one task per key,
each awaiting the same mapper for its items in order, all gathered.
The output is checked against the synchronous plain reference.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import benchlib
import uvloop
from benchlib import KeyedItems, running_sum, zero

SLEEP_S = 0.01


async def slow_running_sum(state: int, value: int) -> tuple[int, int]:
    """`benchlib.running_sum` after ``await asyncio.sleep(0.01)``."""
    await asyncio.sleep(SLEEP_S)
    return running_sum(state, value)


def run_aiowax(data: KeyedItems, batch_size: int) -> list[Any]:
    from aiowax.dataflow import Dataflow
    from aiowax.testing import TestingSink, TestingSource, run_main

    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(data, batch_size=batch_size))
    flow.stateful_map("slow_running_sum", zero, slow_running_sum)
    flow.output("out", TestingSink(out))
    run_main(flow)
    return out


def run_plain(data: KeyedItems, batch_size: int) -> list[Any]:
    out: list[Any] = []

    async def one_key(key: str, values: list[int]) -> None:
        state = zero()
        for value in values:
            state, result = await slow_running_sum(state, value)
            out.append((key, result))

    async def main() -> None:
        per_key = benchlib.by_key(data)
        await asyncio.gather(*(one_key(k, vs) for k, vs in per_key.items()))

    uvloop.run(main())
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=5, help="runs; the median is reported")
    p.add_argument("--contestant", choices=["aiowax", "plain"], default="aiowax")
    p.add_argument("--keys", type=int, default=100)
    p.add_argument("--per-key", type=int, default=10, help="items per key")
    p.add_argument("--batch-size", type=int, default=1000)
    args = p.parse_args()
    data = KeyedItems(args.keys * args.per_key, "int", args.keys)
    fn = run_aiowax if args.contestant == "aiowax" else run_plain
    fn(KeyedItems(args.keys, "int", args.keys), args.batch_size)  # warm-up: 1 item per key
    times, outs = benchlib.time_runs(lambda: fn(data, args.batch_size), args.repeat)
    expected = benchlib.by_key(benchlib.plain_stateful_map(data))
    median = sorted(times)[len(times) // 2]
    result: dict[str, Any] = {
        "bench": "async_keyed",
        "contestant": args.contestant,
        "items": len(data),
        "keys": args.keys,
        "per_key": args.per_key,
        "sleep_s": SLEEP_S,
        "batch_size": args.batch_size,
        "times_s": times,
        "median_s": median,
        "median_ms": 1000 * median,
        "best_s": min(times),
        "worst_s": max(times),
        "floor_s": args.per_key * SLEEP_S,
        "serial_s": len(data) * SLEEP_S,
        "check_ok": all(benchlib.by_key(out) == expected for out in outs),
        "versions": {
            "aiowax": benchlib.package_version("aiowax"),
            "uvloop": benchlib.package_version("uvloop"),
        },
    }
    benchlib.emit(result)


if __name__ == "__main__":
    main()
