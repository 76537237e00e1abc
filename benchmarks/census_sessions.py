"""What an open session costs, by who allocated it (tracemalloc, aiowax only).

Runs `bench_sessions_memory.py`'s flow (``N`` one-item keys ``u{i}``,
``reduce_window`` with ``SessionWindow(gap)`` on the event clock) with every
session open to the end of the input (``--gap-s 3600``, the default here),
and takes a `tracemalloc` snapshot when the window step is told the input
ended, before it closes anything: then every key's session is open. Each
live allocation is put in a group by the frames that made it:

- ``items``: the source's items (the key ``u{i}``, the value tuple, its
  datetime and int), made by the user's iterator; the step keeps the key
  and the value, as any engine must (the value is the session's reduction);
- ``key_state``: the step's per-key state object (`KeyState`);
- ``key_table``: the step's dict from key to state;
- ``item_time``: the item's time in whole µs, the key's watermark too;
- ``timers``: the step's timer entries (keys due at one loop time);
- ``other``: everything else (imports, the loop, buffers).

Reported: bytes per open session in each group, and the sum of all but
``other``. No RSS: tracemalloc's own record of every allocation is in it
(`bench_sessions_memory.py --gap-s 3600` gives the RSS per open session).
Slow under tracemalloc: 200,000 keys take about 35 s. Not part of
`run.py`: it explains the ``sessions_memory`` rows (see RESULTS.md).

Patches the private ``WindowOp.end_of_input`` to take the snapshot: it may
move with the engine.
"""

from __future__ import annotations

import gc
import linecache
import tracemalloc
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import benchlib
from bench_sessions_memory import CountingSink
from benchlib import KeyedItems, add_timed, event_time

import aiowax
from aiowax._engine.ops.windows.op import WindowOp
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSource, run_main
from aiowax.window import EventClockConfig, SessionWindow

#: Group -> (file name ending, a text of the allocating line): the first
#: group one of whose frames matches takes the allocation.
GROUPS: dict[str, tuple[str, str]] = {
    "items": ("benchlib.py", "KeyedItems"),
    "key_state": ("windows/op.py", "KeyState("),
    "key_table": ("windows/op.py", "self.keys[key] = state"),
    "item_time": ("timeutil.py", "EPOCH"),
    "timers": ("windows/op.py", "due"),
}


def group_of(trace: tracemalloc.Traceback) -> str:
    """The group of the allocation made at ``trace`` (see `GROUPS`)."""
    for name, (ending, text) in GROUPS.items():
        for frame in trace:
            if not frame.filename.endswith(ending):
                continue
            line = linecache.getline(frame.filename, frame.lineno)
            if name == "items" or text in line:
                return name
    return "other"


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=200_000, repeat=1)
    p.add_argument("--gap-s", type=float, default=3600.0)
    args = p.parse_args()
    flow = Dataflow()
    flow.input("inp", TestingSource(KeyedItems(args.items, "unique"), batch_size=1000))
    clock = EventClockConfig(event_time, wait_for_system_duration=timedelta(0))
    windower = SessionWindow(gap=timedelta(seconds=args.gap_s))
    flow.reduce_window("add_timed", clock, windower, add_timed)
    flow.output("out", CountingSink())
    snapshots: list[tracemalloc.Snapshot] = []
    ending: Callable[[WindowOp], Awaitable[Any]] = WindowOp.end_of_input

    async def end_of_input(op: WindowOp) -> Any:
        gc.collect()
        snapshots.append(tracemalloc.take_snapshot())
        return await ending(op)

    WindowOp.end_of_input = end_of_input  # type: ignore[method-assign]
    tracemalloc.start(4)
    run_main(flow)
    tracemalloc.stop()
    groups = dict.fromkeys([*GROUPS, "other"], 0)
    for stat in snapshots[0].statistics("traceback"):
        groups[group_of(stat.traceback)] += stat.size
    per = {name: size / args.items for name, size in groups.items()}
    benchlib.emit(
        {
            "bench": "census_sessions",
            "contestant": "aiowax",
            "items": args.items,
            "gap_s": args.gap_s,
            "bytes_per_open_session": per,
            "traced_per_open_session": sum(per.values()) - per["other"],
            "versions": {"aiowax": aiowax.__version__},
        }
    )


if __name__ == "__main__":
    main()
