"""Plain Python: one point of a cost curve, no engine (the floor of each family).

Runs in any interpreter (``curves.py`` uses the aiowax one, for uvloop).
The same input and functions as the engines, counting what it would emit
(it keeps no output list, so its memory is only its state):

- ``keys`` / ``stateful_map``: a dict of per-key states (`benchlib.zero`,
  `benchlib.running_sum`).
- ``keys`` / ``fold_window``: a dict ``key -> [window index, acc]``; a key's
  window is emitted when its next item falls in a later window (event times
  increase per key), the rest at the end. The engines' floor for a tumbling
  fold of in-order data: no watermark, no timers.
- ``windows`` / ``sliding``: per key, the open windows ``{index: acc}``;
  an item adds itself to its W windows with `benchlib.add_timed` and closes
  (emits) the key's windows that end before it.
- ``steps``: ``x = add_one(x)`` N times per item.
- ``async``: 100 asyncio tasks (on uvloop when installed) pulling items
  from one iterator and awaiting ``asyncio.sleep(L ms)`` each: the bound
  ``100 / L`` items/s minus the event loop's own cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import benchlib
import curvelib
from benchlib import ALIGN, add_one, add_timed, event_time, running_sum, zero
from curvelib import CONCURRENCY, SLIDE, TUMBLE, CurveItems, fold_add, fold_zero


def stateful_map(data: CurveItems) -> int:
    states: dict[str, int] = {}
    count = 0
    for key, value in data:
        state = states[key] if key in states else zero()
        states[key], _ = running_sum(state, value)
        count += 1
    return count


def tumbling_fold(data: CurveItems, length: timedelta = TUMBLE) -> int:
    open_: dict[str, list[Any]] = {}
    emitted = 0
    for key, value in data:
        index = (event_time(value) - ALIGN) // length
        slot = open_.get(key)
        if slot is None or slot[0] != index:
            if slot is not None:
                emitted += 1
            slot = open_[key] = [index, fold_zero()]
        slot[1] = fold_add(slot[1], value)
    return emitted + len(open_)


def sliding_reduce(data: CurveItems, length: timedelta, offset: timedelta) -> int:
    windows: dict[str, dict[int, Any]] = {}
    emitted = 0
    for key, value in data:
        d = event_time(value) - ALIGN
        lo, hi = (d - length) // offset + 1, d // offset
        accs = windows.get(key)
        if accs is None:
            accs = windows[key] = {}
        for index in [i for i in accs if i < lo]:
            del accs[index]
            emitted += 1
        for index in range(lo, hi + 1):
            accs[index] = add_timed(accs[index], value) if index in accs else value
    return emitted + sum(len(accs) for accs in windows.values())


def steps(items: int, n: int) -> int:
    count = 0
    fns = [add_one] * n
    for x in range(items):
        for fn in fns:
            x = fn(x)
        count += 1
    return count


async def async_map(items: int, latency_s: float) -> int:
    it: Iterator[int] = iter(range(items))
    done = 0

    async def worker() -> None:
        nonlocal done
        for _ in it:
            await asyncio.sleep(latency_s)
            done += 1

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done


def main() -> None:
    args = curvelib.point_parser(__doc__ or "").parse_args()
    fam, op, x = args.family, args.op, args.x
    data: dict[int, CurveItems] = {}
    if fam in ("keys", "windows"):
        kind = "int" if op == "stateful_map" else "timed"
        data[args.items] = CurveItems(args.items, curvelib.keys_of(args), kind)

    def inp(items: int) -> CurveItems:
        if items not in data:
            kind = "int" if op == "stateful_map" else "timed"
            data[items] = CurveItems(items, curvelib.keys_of(args), kind)
        return data[items]

    def run_once(items: int) -> int:
        if fam == "keys" and op == "stateful_map":
            return stateful_map(inp(items))
        if fam == "keys":
            return tumbling_fold(inp(items))
        if fam == "windows":
            return sliding_reduce(inp(items), SLIDE * x, SLIDE)
        if fam == "steps":
            return steps(items, x)
        if fam == "async":
            try:
                import uvloop

                return uvloop.run(async_map(items, x / 1000))
            except ImportError:
                return asyncio.run(async_map(items, x / 1000))
        raise SystemExit(f"plain_curve: no plain reference for --family {fam}")

    benchlib.emit(curvelib.measure_point(run_once, args, "plain"))


if __name__ == "__main__":
    main()
