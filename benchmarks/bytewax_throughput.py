"""Bytewax 0.17.2 throughput: TestingInput -> map -> filter -> null sink.

Runs in the Bytewax 0.17.2 interpreter, with that release's names:
``TestingInput``, id-less ``map``/``filter``, ``DynamicOutput`` and
``StatelessSink``. Times ``bytewax.testing.run_main(flow)``.
"""

from __future__ import annotations

from typing import Any

import benchlib
from benchlib import add_one, is_even
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicOutput, StatelessSink
from bytewax.testing import TestingInput, run_main


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


def run_once(items: int, batch_size: int) -> int:
    flow = Dataflow()
    flow.input("inp", TestingInput(range(items), batch_size=batch_size))
    flow.map(add_one)
    flow.filter(is_even)
    out = CountingOutput()
    flow.output("out", out)
    run_main(flow)
    return out.sink.count


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000)
    p.add_argument("--batch-size", type=int, default=1000)
    args = p.parse_args()
    run_once(min(args.items, 100 if args.batch_size == 1 else 10_000), args.batch_size)
    times, kept = benchlib.time_runs(lambda: run_once(args.items, args.batch_size), args.repeat)
    result = benchlib.throughput_result("bytewax", args.items, args.batch_size, times, kept)
    result["versions"] = {"bytewax": benchlib.package_version("bytewax")}
    benchlib.emit(result)


if __name__ == "__main__":
    main()
