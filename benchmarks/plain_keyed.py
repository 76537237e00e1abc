"""Plain-Python keyed state: a dict of per-key states calling the same functions.

No engine: the floor for the keyed benchmarks. ``--op stateful_map`` runs
`benchlib.plain_stateful_map` (a dict of per-key states, the same builder
and mapper, emitting ``(key, out)`` into a list), ``--op reduce``
`benchlib.plain_reduce` and ``--op batch`` `benchlib.plain_batch`, over the
same `benchlib.KeyedItems` the engines read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import benchlib
from benchlib import KeyedItems


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000)
    p.add_argument("--op", choices=("stateful_map", "reduce", "batch"), default="stateful_map")
    p.add_argument("--keys", type=int, default=benchlib.KEY_COUNT)
    p.add_argument("--max-size", type=int, default=100, help="batch: max_size")
    args = p.parse_args()
    kind = "pair" if args.op == "reduce" else "int"
    ops: dict[str, Callable[[Any], list[Any]]] = {
        "stateful_map": benchlib.plain_stateful_map,
        "reduce": benchlib.plain_reduce,
        "batch": lambda data: benchlib.plain_batch(data, args.max_size),
    }
    op = ops[args.op]
    op(KeyedItems(min(args.items, 10_000), kind, args.keys))  # warm-up
    times, outputs = benchlib.time_runs(
        lambda: len(op(KeyedItems(args.items, kind, args.keys))), args.repeat
    )
    expected = benchlib.expected_outputs(args.op, args.items, args.keys, args.max_size)
    result = benchlib.rate_result(
        "keyed", "plain", args.items, times, outputs, expected, op=args.op, keys=args.keys
    )
    benchlib.emit(result)


if __name__ == "__main__":
    main()
