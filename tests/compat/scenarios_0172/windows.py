"""0.17.2's window operators on the event clock: they emit ``(key, value)``.

Tumbling, sliding and session windows, with an item late for its window.
"""

import operator
from datetime import datetime, timedelta, timezone

from aiowax.dataflow import Dataflow
from aiowax.testing import TestingInput, TestingOutput, run_main
from aiowax.window import (
    EventClockConfig,
    SessionWindow,
    SlidingWindow,
    TumblingWindow,
)

ALIGN = datetime(2023, 1, 1, tzinfo=timezone.utc)
SECONDS = [1, 4, 8, 12, 13, 2, 21, 35]  # 2 comes after 13: late for [0, 10)
CLOCK = EventClockConfig(lambda v: ALIGN + timedelta(seconds=v), timedelta(seconds=0))


def run(add_window_step):
    out = []
    flow = Dataflow()
    flow.input("inp", TestingInput([(key, s) for s in SECONDS for key in ("a", "b")]))
    add_window_step(flow)
    flow.output("out", TestingOutput(out))
    run_main(flow)
    # Keys close their windows independently: sorted.
    return sorted(out)


print(
    "tumbling reduce:",
    run(
        lambda f: f.reduce_window(
            "sum", CLOCK, TumblingWindow(timedelta(seconds=10), ALIGN), operator.add
        )
    ),
)
print(
    "sliding fold:",
    run(
        lambda f: f.fold_window(
            "fold",
            CLOCK,
            SlidingWindow(timedelta(seconds=10), timedelta(seconds=5), ALIGN),
            list,
            lambda acc, v: [*acc, v],
        )
    ),
)
print(
    "session collect:",
    run(lambda f: f.collect_window("collect", CLOCK, SessionWindow(timedelta(seconds=5)))),
)
