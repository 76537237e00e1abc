"""Every Dataflow method called as 0.17.2 code calls it.

``map``, ``filter``, ``filter_map`` and ``flat_map`` without a step id;
``inspect`` and ``inspect_epoch`` (no step id in either API); and every
method with its arguments by keyword, under 0.17.2's names (``input=``,
``output=``).
"""

import operator
from datetime import datetime, timedelta, timezone

from aiowax.connectors.stdio import StdOutput
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingInput, TestingOutput, run_main
from aiowax.window import EventClockConfig, TumblingWindow

ALIGN = datetime(2023, 1, 1, tzinfo=timezone.utc)


def parse(line):
    return int(line)


def is_even(n):
    return n % 2 == 0


def halve_small(n):
    return n // 2 if n < 8 else None


def repeat(n):
    return [n] * n


# Collected, not printed: steps run concurrently, so their prints would
# interleave as each system schedules them.
SEEN = []
EPOCHS = []


def show(item):
    SEEN.append(item)


def show_epoch(epoch, item):
    EPOCHS.append((epoch, item))


flow = Dataflow()
flow.input("inp", input=TestingInput(["1", "2", "3", "4", "6", "8", "10"]))
flow.map(parse)
flow.filter(is_even)
flow.filter_map(halve_small)
flow.flat_map(repeat)
flow.inspect(show)
flow.inspect_epoch(show_epoch)
flow.map(mapper=lambda n: (f"k{n}", n))
flow.output(step_id="stdout", output=StdOutput())
flow.stateful_map(step_id="running", builder=lambda: 0, mapper=lambda s, n: (s + n, s + n))
flow.reduce(step_id="sum_to_6", reducer=operator.add, is_complete=lambda total: total >= 6)
out = []
flow.output("out", TestingOutput(out))
run_main(flow, epoch_interval=timedelta(0))
print("inspected:", SEEN)
print("epochs:", EPOCHS)
print("reduced:", out)

events = [("k", ALIGN + timedelta(seconds=s)) for s in (0, 1, 2, 11, 12)]
win = Dataflow()
win.input(step_id="inp", input=TestingInput(events))
win.fold_window(
    step_id="fold",
    clock_config=EventClockConfig(dt_getter=lambda t: t, wait_for_system_duration=timedelta(0)),
    window_config=TumblingWindow(length=timedelta(seconds=10), align_to=ALIGN),
    builder=list,
    folder=lambda acc, t: [*acc, t.second],
)
win.map(lambda key_seconds: key_seconds[1])
win_out = []
win.output("out", TestingOutput(win_out))
run_main(win)
print("folded:", win_out)
