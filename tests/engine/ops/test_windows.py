"""The window operators end to end: which windows, when they close, what is late.

Acceptance of the "Windows" section of the API contract for `fold_window`,
`reduce_window` and `collect_window`. Every timing test runs on the virtual
clock loop, so closes happen at exact loop times and nothing really sleeps.

Items are ``(key, (seconds, label))``: the event clock reads the time from
``seconds`` (after `T0`) and each operator is followed by a step that turns
its result into ``(key, WindowMetadata, labels)``, the labels joined in the
order the operator gave them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import aiowax
from aiowax._testing.virtual import VIRTUAL_EPOCH
from aiowax.dataflow import Dataflow
from aiowax.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax.testing import TestingSink, TestingSource, run_main
from aiowax.window import (
    ClockConfig,
    EventClockConfig,
    SessionWindow,
    SlidingWindow,
    SystemClockConfig,
    TumblingWindow,
    WindowConfig,
    WindowMetadata,
)
from observing import observe_runs, operators_of

#: Event times are seconds after this instant; it is also the virtual loop's
#: wall time at loop time 0, so system-clock windows line up with it.
T0 = VIRTUAL_EPOCH
#: On the virtual clock a watchdog counts loop time, which jumps.
WATCHDOG = 10 * 3600

OPS = ["fold", "reduce", "collect"]
MODES = ["sync", "async"]

virtual = pytest.mark.asyncio(loop_factories=["virtual"])


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def secs(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def meta(open_s: float, close_s: float) -> WindowMetadata:
    return WindowMetadata(at(open_s), at(close_s))


def loop_time() -> float:
    return asyncio.get_running_loop().time()


# -- user functions, plain and async -------------------------------------------------


def get_time(value: tuple[float, str]) -> datetime:
    return at(value[0])


async def aget_time(value: tuple[float, str]) -> datetime:
    await anyio.lowlevel.checkpoint()
    return at(value[0])


def build() -> list[str]:
    return []


async def abuild() -> list[str]:
    await anyio.lowlevel.checkpoint()
    return []


def fold(acc: list[str], value: tuple[float, str]) -> list[str]:
    return [*acc, value[1]]


async def afold(acc: list[str], value: tuple[float, str]) -> list[str]:
    await anyio.lowlevel.checkpoint()
    return [*acc, value[1]]


def reduce(a: tuple[float, str], b: tuple[float, str]) -> tuple[float, str]:
    return (max(a[0], b[0]), a[1] + b[1])


async def areduce(a: tuple[float, str], b: tuple[float, str]) -> tuple[float, str]:
    await anyio.lowlevel.checkpoint()
    return (max(a[0], b[0]), a[1] + b[1])


def event_clock(
    wait: float = 0, mode: str = "sync", on_late: Callable[..., Any] | None = None
) -> EventClockConfig:
    getter = aget_time if mode == "async" else get_time
    return EventClockConfig(getter, secs(wait), on_late=on_late)


def labels(op: str, result: Any) -> str:
    """The labels of a window's result, in the order the operator gave them."""
    if op == "fold":
        return "".join(result)
    if op == "reduce":
        return str(result[1])
    return "".join(label for _, label in result)


def add_window(
    flow: Dataflow,
    op: str,
    clock: ClockConfig,
    window: WindowConfig,
    mode: str = "sync",
    step_id: str = "win",
) -> None:
    """Add the ``op`` window step, then a step making ``(key, meta, labels)``."""
    if op == "fold":
        if mode == "async":
            flow.fold_window(step_id, clock, window, abuild, afold)
        else:
            flow.fold_window(step_id, clock, window, build, fold)
    elif op == "reduce":
        flow.reduce_window(step_id, clock, window, areduce if mode == "async" else reduce)
    else:
        flow.collect_window(step_id, clock, window)
    flow.map(f"{step_id}_labels", lambda kv: (kv[0], kv[1][0], labels(op, kv[1][1])))


class _ScriptPart(StatefulSourcePartition[Any, int]):
    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.pos = 0

    async def next_batch(self, sched: datetime | None) -> list[Any]:
        while self.pos < len(self.script):
            step = self.script[self.pos]
            self.pos += 1
            if isinstance(step, int | float):
                await asyncio.sleep(step)
            elif callable(step):
                step()
            else:
                return list(step)
        raise StopAsyncIteration

    def snapshot(self) -> int:
        return self.pos


class Script(FixedPartitionedSource[Any, int]):
    """One async partition playing a script, one entry per call.

    A list is a batch of items; a number sleeps that many seconds of loop
    time; a callable is called (to look at the flow while it runs). Lists
    with no number between them may reach the steps as one message (the
    lane gathers reads that return without waiting); a 0 keeps them apart.
    """

    def __init__(self, *script: Any) -> None:
        self.script = list(script)

    def list_parts(self) -> list[str]:
        return ["script"]

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> _ScriptPart:
        return _ScriptPart(self.script)


def window_flow(
    source: Any,
    op: str,
    clock: ClockConfig,
    window: WindowConfig,
    mode: str = "sync",
    stamp: bool = False,
) -> tuple[Dataflow, list[Any]]:
    """A flow: source -> window -> labels [-> (loop time, result)] -> sink."""
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", source)
    add_window(flow, op, clock, window, mode)
    if stamp:
        flow.map("stamp", lambda x: (loop_time(), x))
    flow.output("out", TestingSink(out))
    return flow, out


async def run(flow: Dataflow, workers: int = 1) -> None:
    with anyio.fail_after(WATCHDOG):
        await aiowax.run(flow, workers=workers)


@contextlib.contextmanager
def operators(step_id: str = "win") -> Iterator[list[Any]]:
    """The operators of ``step_id`` (one per worker) of the runs inside."""
    ops: list[Any] = []
    with observe_runs(lambda ctx: ops.extend(operators_of([ctx], step_id))):
        yield ops


def late_count(ops: list[Any]) -> int:
    return sum(op.late_count for op in ops)


def items(key: str, *pairs: tuple[float, str]) -> list[tuple[str, tuple[float, str]]]:
    return [(key, pair) for pair in pairs]


# -- tumbling windows ---------------------------------------------------------------


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
async def test_tumbling_windows(op: str, mode: str) -> None:
    batch = [
        ("a", (1, "a")),
        ("b", (3, "x")),
        ("a", (4, "b")),
        # Exactly at the close of [0, 10): it belongs to the next window,
        # and it closes [0, 10) since the watermark reaches its close time.
        ("a", (10, "c")),
        ("a", (12, "d")),
        # [0, 10) of key a has closed: late.
        ("a", (5, "e")),
        ("b", (25, "y")),
    ]
    flow, out = window_flow(
        Script(batch), op, event_clock(mode=mode), TumblingWindow(secs(10), T0), mode
    )
    with operators() as ops:
        await run(flow)
    assert sorted(out) == [
        ("a", meta(0, 10), "ab"),
        ("a", meta(10, 20), "cd"),
        ("b", meta(0, 10), "x"),
        ("b", meta(20, 30), "y"),
    ]
    assert late_count(ops) == 1
    assert ops[0].state_size() == 0


@virtual
@pytest.mark.parametrize("op", OPS)
async def test_tumbling_windows_without_items_are_not_emitted(op: str) -> None:
    flow, out = window_flow(
        Script(items("a", (1, "a"), (35, "b"))), op, event_clock(), TumblingWindow(secs(10), T0)
    )
    await run(flow)
    assert sorted(out) == [("a", meta(0, 10), "a"), ("a", meta(30, 40), "b")]


# -- sliding windows ----------------------------------------------------------------


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
# Every alignment here is congruent to T0 modulo the offset: the windows are
# the same, reached with negative and positive window numbers.
@pytest.mark.parametrize("align_s", [0, 100, -95, 5], ids=["T0", "future", "past", "5s"])
async def test_overlapping_sliding_windows(op: str, mode: str, align_s: float) -> None:
    batch = items("a", (1, "a"), (7, "b"), (12, "c")) + items("b", (-3, "x"))
    window = SlidingWindow(length=secs(10), offset=secs(5), align_to=at(align_s))
    flow, out = window_flow(Script(batch), op, event_clock(mode=mode), window, mode)
    with operators() as ops:
        await run(flow)
    assert sorted(out) == [
        ("a", meta(-5, 5), "a"),
        ("a", meta(0, 10), "ab"),
        ("a", meta(5, 15), "bc"),
        ("a", meta(10, 20), "c"),
        ("b", meta(-10, 0), "x"),
        ("b", meta(-5, 5), "x"),
    ]
    assert late_count(ops) == 0


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
async def test_an_item_is_late_for_each_of_its_windows_that_closed(
    op: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Windows of 10 s every 5 s: an item at 6 is in [0, 10) and [5, 15). Once
    # the watermark is 11, [0, 10) has closed but [5, 15) is open: the item
    # goes in [5, 15) and is late for [0, 10) (issue 11, W3: it used to be
    # left out of [0, 10) without a word). An item at 3 is in [-5, 5) and
    # [0, 10), both closed: late twice. Lateness is counted, logged and
    # reported once per window missed.
    batch = items("a", (1, "a"), (11, "b"), (6, "c"), (3, "d"))
    window = SlidingWindow(length=secs(10), offset=secs(5), align_to=T0)
    late: list[Any] = []
    clock = event_clock(mode=mode, on_late=lambda *args: late.append(args))
    flow, out = window_flow(Script(batch), op, clock, window, mode)
    with operators() as ops, caplog.at_level(logging.DEBUG, logger="aiowax.window"):
        await run(flow)
    assert sorted(out) == [
        ("a", meta(-5, 5), "a"),
        ("a", meta(0, 10), "a"),
        ("a", meta(5, 15), "cb" if op == "collect" else "bc"),
        ("a", meta(10, 20), "b"),
    ]
    assert late_count(ops) == 3
    assert late == [
        ("a", (6, "c"), at(6), at(11)),
        ("a", (3, "d"), at(3), at(11)),
        ("a", (3, "d"), at(3), at(11)),
    ]
    dropped = [r.getMessage() for r in caplog.records if "late item" in r.getMessage()]
    assert len(dropped) == 3
    assert "(6, 'c')" in dropped[0]


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
async def test_an_item_late_for_some_of_its_sliding_windows_is_reported(op: str, mode: str) -> None:
    # Issue 11, W3 (repro 14): windows of 10 min every 5 min; 12 closes
    # [0, 10), so 9 only goes in [5, 15), and is reported late once.
    batch = items("k", (60, "a"), (720, "b"), (540, "c"))
    window = SlidingWindow(length=secs(600), offset=secs(300), align_to=T0)
    late: list[Any] = []
    clock = event_clock(mode=mode, on_late=lambda *args: late.append(args))
    flow, out = window_flow(Script(batch), op, clock, window, mode)
    with operators() as ops:
        await run(flow)
    assert sorted(out) == [
        ("k", meta(-300, 300), "a"),
        ("k", meta(0, 600), "a"),
        ("k", meta(300, 900), "cb" if op == "collect" else "bc"),
        ("k", meta(600, 1200), "b"),
    ]
    assert late == [("k", (540, "c"), at(540), at(720))]
    assert late_count(ops) == 1


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
async def test_sliding_windows_with_gaps(op: str, mode: str) -> None:
    # Windows of 5 s every 10 s: [0, 5), [10, 15), [20, 25); the times in
    # between belong to no window and are dropped, but are not late.
    batch = items(
        "a",
        (1, "a"),
        (3, "b"),
        (5.5, "g"),  # gap: still moves the watermark, so 4 is late after it
        (4, "m"),
        (12, "c"),
        (8, "h"),  # gap, behind the watermark: still not late
        (2, "l"),  # [0, 5) has closed: late
        (17, "i"),  # gap
        (21, "d"),
        (5, "j"),  # gap, at the close of [0, 5)
    )
    late: list[Any] = []
    clock = event_clock(mode=mode, on_late=lambda *args: late.append(args))
    window = SlidingWindow(length=secs(5), offset=secs(10), align_to=T0)
    flow, out = window_flow(Script(batch), op, clock, window, mode)
    with operators() as ops:
        await run(flow)
    assert sorted(out) == [
        ("a", meta(0, 5), "ab"),
        ("a", meta(10, 15), "c"),
        ("a", meta(20, 25), "d"),
    ]
    assert late_count(ops) == 2
    assert late == [("a", (4, "m"), at(4), at(5.5)), ("a", (2, "l"), at(2), at(12))]


# -- session windows ----------------------------------------------------------------


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
async def test_sessions_in_order(op: str, mode: str) -> None:
    batch = [
        ("a", (0, "a")),
        ("b", (1, "x")),
        ("a", (3, "b")),
        ("a", (7, "c")),  # 4 s after the last one: same session
        ("a", (12, "d")),  # exactly the gap after 7: items must be closer
        ("a", (20, "e")),
        ("b", (5.999999, "y")),
    ]
    flow, out = window_flow(Script(batch), op, event_clock(mode=mode), SessionWindow(secs(5)), mode)
    with operators() as ops:
        await run(flow)
    assert sorted(out) == [
        ("a", meta(0, 7), "abc"),
        ("a", meta(12, 12), "d"),
        ("a", meta(20, 20), "e"),
        ("b", meta(1, 5.999999), "xy"),
    ]
    assert late_count(ops) == 0


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
async def test_sessions_out_of_order(op: str, mode: str) -> None:
    # Waiting 20 s, nothing is late. 8 extends [10, 10] backwards; 30 and 27
    # make a second session with 27 before 30.
    batch = items("a", (10, "a"), (8, "b"), (30, "c"), (27, "d"), (14, "e"))
    flow, out = window_flow(Script(batch), op, event_clock(20, mode), SessionWindow(secs(5)), mode)
    with operators() as ops:
        await run(flow)
    by_time = op == "collect"
    assert sorted(out) == [
        ("a", meta(8, 14), "bae" if by_time else "abe"),
        ("a", meta(27, 30), "dc" if by_time else "cd"),
    ]
    assert late_count(ops) == 0


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
async def test_a_bridging_item_merges_two_sessions_keeping_both(op: str, mode: str) -> None:
    # 3 and 10 are 7 s apart: two sessions, both still open as the watermark
    # is 0. 6 is within the gap of both: one session with all three values.
    batch = items("a", (10, "a"), (3, "b"), (6, "c"))
    flow, out = window_flow(
        Script(batch, 3600.0), op, event_clock(10, mode), SessionWindow(secs(5)), mode
    )
    with operators() as ops:
        await run(flow)
    expected = "bca" if op == "collect" else "abc"
    assert out == [("a", meta(3, 10), expected)]
    assert late_count(ops) == 0


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
async def test_bridging_merges_every_session_it_touches(op: str, mode: str) -> None:
    # Sessions [0, 0], [4, 4] (gap 3) ... [8, 8]: 2 bridges the first two,
    # then 6 bridges the result and [8, 8].
    batch = items("a", (8, "a"), (4, "b"), (0, "c"), (2, "d"), (6, "e"), (20, "f"))
    flow, out = window_flow(Script(batch), op, event_clock(100, mode), SessionWindow(secs(3)), mode)
    await run(flow)
    expected = "cdbea" if op == "collect" else "abcde"
    assert sorted(out) == [("a", meta(0, 8), expected), ("a", meta(20, 20), "f")]


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
async def test_session_items_behind_the_watermark_are_late(op: str, mode: str) -> None:
    # Without waiting, the watermark is the newest time: 3 and 6 are late
    # even though 6 is within the gap of the open session [10, 10]; and so
    # is the second 10, at the watermark (see the next test).
    batch = items("a", (10, "a"), (3, "b"), (6, "c"), (10, "d"), (11, "e"))
    late: list[Any] = []
    clock = event_clock(0, mode, on_late=lambda *args: late.append(args))
    flow, out = window_flow(Script(batch), op, clock, SessionWindow(secs(5)), mode)
    with operators() as ops:
        await run(flow)
    assert out == [("a", meta(10, 11), "ae")]
    assert late_count(ops) == 3
    assert late == [
        ("a", (3, "b"), at(3), at(10)),
        ("a", (6, "c"), at(6), at(10)),
        ("a", (10, "d"), at(10), at(10)),
    ]


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("split", "pause"), [(4, 0), (1, 0), (2, 0), (1, 0.001), (3, 0.5)])
@pytest.mark.parametrize("wait", [0, 2])
async def test_a_session_item_at_its_keys_watermark_is_late_however_the_input_is_split(
    mode: str, split: int, pause: float, wait: float
) -> None:
    # helper-57: an item at exactly its key's watermark was kept when it came
    # in the same message as the item that set the watermark, and dropped
    # when it came after some loop time had passed, so one input gave
    # different sessions from run to run. Time passes between any two items:
    # it is late, however the input is split into messages and whatever the
    # loop clock did in between (as in Bytewax 0.17.2, late in every split).
    # The first item of a key, at its own watermark when nothing is waited
    # for, is on time.
    batch = [("a", (5 + wait, "x")), ("a", (5, "y")), ("b", (5 + wait, "z")), ("b", (4, "w"))]
    script: list[Any] = []
    for i in range(0, len(batch), split):
        script += [batch[i : i + split], pause]
    late: list[Any] = []
    clock = event_clock(wait, mode, on_late=lambda *args: late.append(args))
    flow, out = window_flow(Script(*script), "collect", clock, SessionWindow(secs(1)), mode)
    await run(flow)
    only = meta(5 + wait, 5 + wait)
    assert sorted(out) == [("a", only, "x"), ("b", only, "z")]
    assert [(key, value) for key, value, *_ in late] == [("a", (5, "y")), ("b", (4, "w"))]
    # on_late is told the watermark itself (5, or 5 and the pause after it).
    assert late[0][3] == at(5) + secs(pause if split == 1 else 0)


# -- the order values are seen in ------------------------------------------------------


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "window",
    [TumblingWindow(secs(10), T0), SlidingWindow(secs(10), secs(20), T0), SessionWindow(secs(5))],
    ids=["tumbling", "sliding", "session"],
)
async def test_fold_and_reduce_see_arrival_order_collect_sorts_by_time(
    op: str, mode: str, window: WindowConfig
) -> None:
    batch = items("a", (5, "a"), (1, "b"), (3, "c"), (1, "d"), (5, "e"), (3.5, "f"))
    flow, out = window_flow(Script(batch), op, event_clock(100, mode), window, mode)
    await run(flow)
    [(_, metadata, got)] = out
    # Stable: "b" and "d" share a time and keep their arrival order, as do
    # "a" and "e".
    assert got == ("bdcfae" if op == "collect" else "abcdef")
    assert metadata == (meta(1, 5) if isinstance(window, SessionWindow) else meta(0, 10))


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "window",
    [TumblingWindow(secs(10), T0), SessionWindow(secs(5))],
    ids=["tumbling", "session"],
)
async def test_fold_window_builder_is_called_with_no_arguments(
    mode: str, window: WindowConfig
) -> None:
    calls: list[Any] = []

    def builder(*args: Any, **kwargs: Any) -> list[str]:
        calls.append((args, kwargs))
        return []

    async def abuilder(*args: Any, **kwargs: Any) -> list[str]:
        return builder(*args, **kwargs)

    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", Script(items("a", (1, "a"), (2, "b"), (25, "c")) + items("b", (3, "x"))))
    flow.fold_window(
        "win", event_clock(mode=mode), window, abuilder if mode == "async" else builder, fold
    )
    flow.output("out", TestingSink(out))
    await run(flow)
    assert sorted((k, m, acc) for k, (m, acc) in out) == [
        ("a", meta(0, 10) if isinstance(window, TumblingWindow) else meta(1, 2), ["a", "b"]),
        ("a", meta(20, 30) if isinstance(window, TumblingWindow) else meta(25, 25), ["c"]),
        ("b", meta(0, 10) if isinstance(window, TumblingWindow) else meta(3, 3), ["x"]),
    ]
    assert calls == [((), {})] * 3


@virtual
@pytest.mark.parametrize("mode", MODES)
async def test_reduce_window_does_not_call_the_reducer_for_one_value(mode: str) -> None:
    def reducer(a: Any, b: Any) -> Any:
        raise AssertionError("called")

    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", Script(items("a", (1, "a"), (15, "b"))))
    flow.reduce_window("win", event_clock(mode=mode), TumblingWindow(secs(10), T0), reducer)
    flow.output("out", TestingSink(out))
    await run(flow)
    assert sorted(out) == [("a", (meta(0, 10), (1, "a"))), ("a", (meta(10, 20), (15, "b")))]


# -- waiting for out-of-order items, and late ones --------------------------------------


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
async def test_waiting_keeps_an_out_of_order_item(op: str, mode: str) -> None:
    batch = items("k", (1, "a"), (12, "b"), (5, "c"))
    late: list[Any] = []
    clock = event_clock(10, mode, on_late=lambda *args: late.append(args))
    flow, out = window_flow(Script(batch), op, clock, TumblingWindow(secs(10), T0), mode)
    with operators() as ops:
        await run(flow)
    assert sorted(out) == [("k", meta(0, 10), "ac"), ("k", meta(10, 20), "b")]
    assert late_count(ops) == 0
    assert late == []


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
async def test_without_waiting_the_out_of_order_item_is_late(
    op: str, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    batch = items("k", (1, "a"), (12, "b"), (5, "c"))
    late: list[Any] = []
    clock = event_clock(0, mode, on_late=lambda *args: late.append(args))
    flow, out = window_flow(Script(batch), op, clock, TumblingWindow(secs(10), T0), mode)
    with operators() as ops, caplog.at_level(logging.DEBUG, logger="aiowax.window"):
        await run(flow)
    assert sorted(out) == [("k", meta(0, 10), "a"), ("k", meta(10, 20), "b")]
    assert late_count(ops) == 1
    assert late == [("k", (5, "c"), at(5), at(12))]
    item_time, watermark = late[0][2:]
    assert item_time.utcoffset() == watermark.utcoffset() == timedelta(0)
    [record] = [r for r in caplog.records if r.name == "aiowax.window"]
    assert record.levelno == logging.DEBUG
    message = record.getMessage()
    assert "'win'" in message
    assert "'k'" in message
    assert "(5, 'c')" in message


@virtual
@pytest.mark.parametrize("mode", MODES)
async def test_the_watermark_advances_with_loop_time_while_a_key_is_idle(mode: str) -> None:
    # Waiting 2 s, the newest time 4 at loop time 0 makes the watermark 2;
    # it then follows the loop clock: 2.5 at loop time 0.5, 3.5 at 1.5.
    late: list[Any] = []
    clock = event_clock(2, mode, on_late=lambda *args: late.append(args))
    script = Script(
        items("a", (0, "a"), (4, "z")),
        0.5,
        items("a", (2.9, "b")),  # [0, 3) open until the watermark is 3
        1.0,
        items("a", (2.95, "c"), (3.2, "d")),  # [0, 3) closed at loop time 1
        3600.0,
    )
    flow, out = window_flow(script, "fold", clock, TumblingWindow(secs(3), T0), mode, stamp=True)
    with operators() as ops:
        await run(flow)
    assert out == [(1.0, ("a", meta(0, 3), "ab")), (4.0, ("a", meta(3, 6), "zd"))]
    assert late == [("a", (2.95, "c"), at(2.95), at(3.5))]
    assert late_count(ops) == 1


@virtual
async def test_the_watermark_never_goes_back() -> None:
    # Waiting 5 s: 20 makes the watermark 15; 16 is accepted and leaves it at
    # 15 (not 11), so 14 is late. At loop time 3 it is 18: 17 is late (and
    # 18 would be, at the watermark), 18.5 is not.
    late: list[Any] = []
    clock = event_clock(5, on_late=lambda *args: late.append(args))
    script = Script(
        items("a", (20, "a"), (16, "b"), (14, "c")),
        3.0,
        items("a", (17, "d"), (18.5, "e")),
        3600.0,
    )
    flow, out = window_flow(script, "collect", clock, SessionWindow(secs(5)), stamp=True)
    await run(flow)
    # The session [16, 20] closes when the watermark reaches 25: loop time 10.
    assert out == [(10.0, ("a", meta(16, 20), "bea"))]
    assert late == [("a", (14, "c"), at(14), at(15)), ("a", (17, "d"), at(17), at(18))]


@virtual
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "window",
    [TumblingWindow(secs(3), T0), SessionWindow(secs(3))],
    ids=["tumbling", "session"],
)
async def test_an_item_behind_the_watermark_is_late_after_all_windows_of_its_key_closed(
    op: str, window: WindowConfig
) -> None:
    # The key's only window closes at loop time 3 (it may then be forgotten),
    # but its watermark keeps going: at loop time 4 it is 4, so the item at
    # 2 is late. Emitting [0, 3) (or a session at 2) a second time would be
    # wrong.
    late: list[Any] = []
    clock = event_clock(0, on_late=lambda *args: late.append(args))
    script = Script(items("a", (0, "a")), 4.0, items("a", (2, "b")), 3600.0)
    flow, out = window_flow(script, op, clock, window, stamp=True)
    with operators() as ops:
        await run(flow)
    first = meta(0, 3) if isinstance(window, TumblingWindow) else meta(0, 0)
    assert out == [(3.0, ("a", first, "a"))]
    assert late == [("a", (2, "b"), at(2), at(4))]
    assert late_count(ops) == 1


@virtual
async def test_a_raising_on_late_hook_stops_the_flow_naming_the_step() -> None:
    class Boom(Exception):
        pass

    def on_late(*args: Any) -> None:
        raise Boom("late")

    clock = event_clock(0, on_late=on_late)
    flow, _ = window_flow(
        Script(items("a", (12, "a"), (1, "b"))), "fold", clock, TumblingWindow(secs(10), T0)
    )
    with pytest.raises(Boom) as raised:
        await run(flow)
    assert any("'win'" in note for note in raised.value.__notes__)


# -- closing on time, with no further input -----------------------------------------


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(("wait", "closes_at"), [(0, 7.0), (3, 10.0)])
async def test_a_tumbling_window_closes_on_its_timer(
    op: str, mode: str, wait: float, closes_at: float
) -> None:
    # The item at T0 + 3 s is seen at loop time 0; its window [0, 10)
    # closes when the watermark, 3 s - wait at loop time 0, reaches 10 s.
    script = Script(items("a", (3, "a")), 3600.0)
    flow, out = window_flow(
        script, op, event_clock(wait, mode), TumblingWindow(secs(10), T0), mode, stamp=True
    )
    await run(flow)
    assert out == [(closes_at, ("a", meta(0, 10), "a"))]


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("wait", [0, 2.5])
async def test_sliding_windows_and_sessions_close_on_their_timers(
    op: str, mode: str, wait: float
) -> None:
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", Script(items("a", (3, "a")), 3600.0))
    add_window(flow, op, event_clock(wait, mode), SlidingWindow(secs(10), secs(5), T0), mode)
    flow.map("stamp", lambda x: (loop_time(), x))
    flow.output("out", TestingSink(out))
    flow.input("inp2", Script(items("s", (3, "b"), (4, "c")), 3600.0))
    add_window(flow, op, event_clock(wait, mode), SessionWindow(secs(5)), mode, "sessions")
    flow.map("stamp2", lambda x: (loop_time(), x))
    flow.output("out2", TestingSink(out))
    await run(flow)
    assert sorted(out) == [
        (2.0 + wait, ("a", meta(-5, 5), "a")),
        (5.0 + wait, ("s", meta(3, 4), "bc")),
        (7.0 + wait, ("a", meta(0, 10), "a")),
    ]


@virtual
@pytest.mark.parametrize("op", OPS)
async def test_end_of_input_flushes_every_window_at_once(op: str) -> None:
    batch = items("a", (3, "a"), (500, "b")) + items("b", (7, "c"))
    flow, out = window_flow(
        Script(batch), op, event_clock(1000), TumblingWindow(secs(10), T0), stamp=True
    )
    with operators() as ops:
        await run(flow)
    assert sorted(out) == [
        (0.0, ("a", meta(0, 10), "a")),
        (0.0, ("a", meta(500, 510), "b")),
        (0.0, ("b", meta(0, 10), "c")),
    ]
    assert ops[0].state_size() == 0


@virtual
@pytest.mark.parametrize("op", OPS)
async def test_keys_have_independent_watermarks(op: str) -> None:
    # Key a jumps far ahead: its own window [0, 10) closes at once, but key
    # b's does not: b's item at 5 is not late, and b's window closes on b's
    # own timer, at loop time 5 (b's watermark is 5 at loop time 0).
    script = Script([("a", (0, "a")), ("b", (1, "x")), ("a", (1000, "b")), ("b", (5, "y"))], 3600.0)
    flow, out = window_flow(script, op, event_clock(), TumblingWindow(secs(10), T0), stamp=True)
    with operators() as ops:
        await run(flow)
    assert sorted(out) == [
        (0.0, ("a", meta(0, 10), "a")),
        (5.0, ("b", meta(0, 10), "xy")),
        (10.0, ("a", meta(1000, 1010), "b")),
    ]
    assert late_count(ops) == 0


# -- the system clock -------------------------------------------------------------------


@virtual
@pytest.mark.parametrize("op", OPS)
async def test_system_clock_windows_close_on_time(op: str) -> None:
    # Item times are the virtual wall time, T0 + loop time.
    script = Script(
        items("a", (0, "a")), 1.0, items("a", (0, "b")), 11.5, items("a", (0, "c")), 3600.0
    )
    flow, out = window_flow(
        script, op, SystemClockConfig(), TumblingWindow(secs(10), T0), stamp=True
    )
    with operators() as ops:
        await run(flow)
    assert out == [(10.0, ("a", meta(0, 10), "ab")), (20.0, ("a", meta(10, 20), "c"))]
    assert late_count(ops) == 0


@virtual
@pytest.mark.parametrize("op", OPS)
async def test_system_clock_sessions(op: str) -> None:
    script = Script(
        items("a", (0, "a")),
        2.0,
        items("a", (0, "b"), (0, "c")),
        1.5,
        items("b", (0, "x")),
        3600.0,
    )
    flow, out = window_flow(script, op, SystemClockConfig(), SessionWindow(secs(5)), stamp=True)
    await run(flow)
    assert out == [(7.0, ("a", meta(0, 2), "abc")), (8.5, ("b", meta(3.5, 3.5), "x"))]


def wall_clock_shift(monkeypatch: pytest.MonkeyPatch, shift: timedelta) -> Callable[[], None]:
    """A script step that moves the virtual loop's wall clock by ``shift`` from then on."""
    clock = asyncio.get_running_loop().clock  # type: ignore[attr-defined]
    real_now = clock.now
    offset = [timedelta(0)]
    monkeypatch.setattr(clock, "now", lambda: real_now() + offset[0])

    def apply() -> None:
        offset[0] = shift

    return apply


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("op", OPS)
async def test_system_clock_windows_are_not_emitted_again_after_the_clock_steps_back(
    op: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 11, W4 (repro 22): [0, 10) of keys a and b closes at loop time
    # 10; at loop time 11 the wall clock steps back 5 s (an NTP step, a VM
    # resume), to 6. [0, 10) was emitted: items then take their key's
    # watermark as their time (11), and go in [10, 20), for a key whose
    # windows all closed (a), one with a window still open (b) and one
    # never seen (c); the system clock is one clock for every key. Nothing
    # is emitted twice and nothing dropped (the first fix of W4 dropped
    # them as late). [10, 20) still closes at loop time 20.
    step_back = wall_clock_shift(monkeypatch, -secs(5))
    script = Script(
        items("a", (0, "a")) + items("b", (0, "x")),
        10.5,
        items("b", (0, "y")),  # [10, 20) of b
        0.5,
        step_back,
        items("a", (0, "late1")) + items("b", (0, "late2")) + items("c", (0, "late3")),
        4.5,  # wall time 10.5
        items("a", (0, "b")),
        3600.0,
    )
    flow, out = window_flow(
        script, op, SystemClockConfig(), TumblingWindow(secs(10), T0), mode, stamp=True
    )
    with operators() as ops:
        await run(flow)
    assert sorted(out) == [
        (10.0, ("a", meta(0, 10), "a")),
        (10.0, ("b", meta(0, 10), "x")),
        (20.0, ("a", meta(10, 20), "late1b")),
        (20.0, ("b", meta(10, 20), "ylate2")),
        (20.0, ("c", meta(10, 20), "late3")),
    ]
    assert late_count(ops) == 0


@virtual
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("windower", ["session", "tumbling"])
async def test_system_clock_items_are_never_late_when_the_wall_clock_lags_the_loop(
    op: str, windower: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A key's watermark moves with the event loop's clock while it is idle;
    # the wall clock drifts from it by microseconds to milliseconds. Reading
    # 1 ms behind, it put the items that follow an idle moment behind their
    # key's watermark: dropped as late (a helper session's repro lost most
    # of 20,000 items of one session; Bytewax 0.17.2 kept all).
    lag = wall_clock_shift(monkeypatch, -timedelta(milliseconds=1))
    script = Script(
        items("k", (0, "a")),
        0,  # a is placed before the clock moves
        lag,
        0.2,
        items("k", (0, "b")),
        0.2,
        items("k", (0, "c")),
        3600.0,
    )
    window = SessionWindow(secs(0.5)) if windower == "session" else TumblingWindow(secs(10), T0)
    flow, out = window_flow(script, op, SystemClockConfig(), window)
    with operators() as ops:
        await run(flow)
    assert [value for _key, _meta, value in out] == ["abc"]
    assert late_count(ops) == 0


# -- the ends of the datetime range ------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    ("window", "far", "expected"),
    [
        (
            TumblingWindow(timedelta(hours=1), T0),
            datetime(9999, 12, 31, 23, 30, tzinfo=UTC),
            [
                WindowMetadata(
                    datetime(9999, 12, 31, 23, tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
                )
            ],
        ),
        (
            SlidingWindow(timedelta(hours=2), timedelta(hours=1), T0),
            datetime(1, 1, 1, 0, 30, tzinfo=UTC),
            [
                WindowMetadata(datetime.min.replace(tzinfo=UTC), datetime(1, 1, 1, 1, tzinfo=UTC)),
                WindowMetadata(datetime.min.replace(tzinfo=UTC), datetime(1, 1, 1, 2, tzinfo=UTC)),
            ],
        ),
    ],
    ids=["past_max", "before_min"],
)
def test_a_window_reaching_past_the_datetime_range_is_clamped_to_it(
    mode: str, window: WindowConfig, far: datetime, expected: list[WindowMetadata]
) -> None:
    # Issue 11, U2 (repro 05): a window closing after datetime.max (or
    # opening before datetime.min) used to end the run with an internal
    # OverflowError, losing the windows of other keys. Its metadata is
    # clamped to the representable range instead; nothing is lost.
    def dt(value: datetime) -> datetime:
        return value

    async def adt(value: datetime) -> datetime:
        return value

    late: list[Any] = []
    out: list[Any] = []
    flow = Dataflow()
    batch = [("a", T0), ("a", T0 + timedelta(hours=5)), ("b", far)]
    if far.year == 9999:
        batch.append(("b", far - timedelta(days=1)))  # behind b's watermark: late
    flow.input("inp", TestingSource(batch, 1))
    flow.fold_window(
        "win",
        EventClockConfig(
            adt if mode == "async" else dt, timedelta(0), on_late=lambda *a: late.append(a)
        ),
        window,
        lambda: 0,
        lambda n, _: n + 1,
    )
    flow.output("out", TestingSink(out))
    run_main(flow)
    got = sorted((k, m.open_time, m.close_time, n) for k, (m, n) in out)
    assert [(o, c) for k, o, c, _ in got if k == "b"] == [
        (m.open_time, m.close_time) for m in expected
    ]
    # The windows of the other key are all there: each of its two items in
    # each of its windows (one tumbling, two sliding).
    a_windows = [(o, n) for k, o, _, n in got if k == "a"]
    assert a_windows[0 if isinstance(window, TumblingWindow) else 1] == (T0, 1)
    assert len(a_windows) == (2 if isinstance(window, TumblingWindow) else 4)
    assert all(n == 1 for _, n in a_windows)
    assert [args[:3] for args in late] == (
        [("b", far - timedelta(days=1), far - timedelta(days=1))] if far.year == 9999 else []
    )


# -- workers ------------------------------------------------------------------------------


def _many_items() -> list[tuple[str, tuple[float, str]]]:
    out = []
    for i in range(300):
        key = f"k{i % 17}"
        t = (i * 7919) % 97 + (i % 3) * 0.25
        out.append((key, (t, chr(ord("a") + i % 26))))
    return out


@virtual
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    "window",
    [TumblingWindow(secs(10), T0), SlidingWindow(secs(10), secs(3), T0), SessionWindow(secs(2))],
    ids=["tumbling", "sliding", "session"],
)
async def test_one_and_three_workers_give_the_same_output(op: str, window: WindowConfig) -> None:
    results = []
    for workers in (1, 3):
        out: list[Any] = []
        flow = Dataflow()
        flow.input("inp", TestingSource(_many_items(), 7))
        add_window(flow, op, event_clock(100), window)
        flow.output("out", TestingSink(out))
        with operators() as ops:
            await run(flow, workers=workers)
        assert len(ops) == workers
        assert late_count(ops) == 0
        results.append(sorted(out))
    assert results[0] == results[1]
    assert len(results[0]) > 17


# -- bad input ----------------------------------------------------------------------------


class Boom(Exception):
    pass


def _raise(*args: Any) -> Any:
    raise Boom("boom")


async def _araise(*args: Any) -> Any:
    await anyio.lowlevel.checkpoint()
    raise Boom("boom")


def _naive(value: Any) -> datetime:
    return datetime(2024, 1, 1)


async def _anaive(value: Any) -> datetime:
    return _naive(value)


@virtual
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize(
    ("getter", "words"),
    [
        pytest.param(_naive, "naive", id="naive"),
        pytest.param(_anaive, "naive", id="async-naive"),
        pytest.param(lambda v: 5, "datetime", id="int"),
        pytest.param(lambda v: "2024-01-01T00:00:00Z", "datetime", id="str"),
        pytest.param(lambda v: date(2024, 1, 1), "datetime", id="date"),
        pytest.param(lambda v: None, "datetime", id="none"),
    ],
)
async def test_a_bad_dt_getter_result_is_a_type_error_naming_the_step(
    op: str, getter: Callable[[Any], Any], words: str
) -> None:
    flow, out = window_flow(
        Script(items("a", (1, "a"))),
        op,
        EventClockConfig(getter, secs(0)),
        TumblingWindow(secs(10), T0),
    )
    with pytest.raises(TypeError, match="'win'") as raised:
        await run(flow)
    assert words in str(raised.value)
    # Every message of the step says its kind as the flow has it.
    assert str(raised.value).startswith(f"{op}_window step 'win': ")
    assert out == []


@virtual
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "item",
    ["a", ("a",), ("a", (1, "a"), 3), (1, (1, "a")), ["a", (1, "a")], None, (b"a", (1, "a"))],
    ids=repr,
)
async def test_a_non_key_value_item_is_a_type_error_naming_the_step(
    op: str, mode: str, item: Any
) -> None:
    flow, _ = window_flow(
        Script([*items("a", (1, "a")), item]),
        op,
        event_clock(mode=mode),
        TumblingWindow(secs(10), T0),
        mode,
    )
    with pytest.raises(TypeError, match="'win'") as raised:
        await run(flow)
    assert repr(item) in str(raised.value)


class _IterRaises:
    def __iter__(self) -> Any:
        raise KeyError("iterated")


@pytest.mark.asyncio
async def test_a_window_step_refuses_a_non_tuple_without_iterating_it() -> None:
    start = datetime.fromisoformat("2024-01-01T00:00:00+00:00")
    flow = Dataflow()
    flow.input("inp", TestingSource([_IterRaises()]))
    flow.collect_window(
        "win",
        EventClockConfig(lambda v: v, timedelta(0)),
        TumblingWindow(timedelta(seconds=1), start),
    )
    flow.output("out", TestingSink([]))
    with pytest.raises(TypeError, match="step 'win' needs"):
        await run(flow)


def _failing_window(what: str, mode: str, window: WindowConfig) -> tuple[Dataflow, list[Any]]:
    bad = _araise if mode == "async" else _raise
    getter = bad if what == "dt_getter" else (aget_time if mode == "async" else get_time)
    clock = EventClockConfig(getter, secs(0))
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", Script(items("a", (1, "a"), (2, "b")), 3600.0))
    if what == "reducer":
        flow.reduce_window("win", clock, window, bad)
    elif what == "collect":
        flow.collect_window("win", clock, window)
    else:
        builder = bad if what == "builder" else (abuild if mode == "async" else build)
        folder = bad if what == "folder" else (afold if mode == "async" else fold)
        flow.fold_window("win", clock, window, builder, folder)
    flow.output("out", TestingSink(out))
    return flow, out


@virtual
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("what", ["builder", "folder", "reducer", "dt_getter"])
@pytest.mark.parametrize(
    "window",
    [TumblingWindow(secs(10), T0), SessionWindow(secs(5))],
    ids=["tumbling", "session"],
)
async def test_a_raising_user_function_reaches_the_caller_with_a_note(
    mode: str, what: str, window: WindowConfig
) -> None:
    flow, out = _failing_window(what, mode, window)
    with pytest.raises(Boom) as raised:
        await run(flow)
    assert type(raised.value) is Boom
    notes = getattr(raised.value, "__notes__", [])
    assert any("'win'" in note and what in note for note in notes), notes
    assert out == []


@virtual
@pytest.mark.parametrize("mode", MODES)
async def test_output_of_windows_closed_before_a_failure_is_written(mode: str) -> None:
    # [0, 10) closes at loop time 10 (watermark 0 + 10 s); the folder fails
    # on the item of loop time 20.
    def folder(acc: list[str], value: tuple[float, str]) -> list[str]:
        if value[1] == "boom":
            raise Boom("boom")
        return fold(acc, value)

    async def afolder(acc: list[str], value: tuple[float, str]) -> list[str]:
        return folder(acc, value)

    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", Script(items("a", (0, "a")), 20.0, items("a", (25, "boom")), 3600.0))
    flow.fold_window(
        "win",
        event_clock(0, mode),
        TumblingWindow(secs(10), T0),
        abuild if mode == "async" else build,
        afolder if mode == "async" else folder,
    )
    flow.output("out", TestingSink(out))
    with pytest.raises(Boom):
        await run(flow)
    assert out == [("a", (meta(0, 10), ["a"]))]


# -- memory ----------------------------------------------------------------------------------

KEYS = 10_000


@virtual
@pytest.mark.parametrize("clock", ["event", "system"])
@pytest.mark.parametrize(
    "window",
    [SessionWindow(secs(1)), TumblingWindow(secs(1), T0)],
    ids=["session", "tumbling"],
)
async def test_keys_whose_windows_closed_leave_no_state(clock: str, window: WindowConfig) -> None:
    seen: dict[str, Any] = {}
    batch = [(f"k{i}", (i * 1e-5, "v")) for i in range(KEYS)]
    clock_config = event_clock() if clock == "event" else SystemClockConfig()
    with operators() as ops:

        def check() -> None:
            [op] = ops
            seen["state_size"] = op.state_size()
            seen["emitted"] = len(out)

        flow, out = window_flow(Script(batch, 5.0, check, 5.0), "fold", clock_config, window)
        await run(flow)
    # While the flow was still running, 5 s after the items.
    assert seen == {"state_size": 0, "emitted": KEYS}
    assert ops[0].state_size() == 0
    assert len(out) == KEYS
    assert {key for key, _, _ in out} == {f"k{i}" for i in range(KEYS)}


# -- the timer heap --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_later_window_deadline_adds_no_heap_entry() -> None:
    # The watermark moves every batch; on a real loop float noise makes the
    # key's deadline a hair later each time. Only an earlier deadline needs
    # a new timer entry: the one already there comes due and reschedules.
    from aiowax._engine.clock import current_clock
    from aiowax._engine.kinds import kind_of
    from aiowax._engine.ops.base import StepEnv
    from aiowax._engine.ops.windows.kinds import CollectWindowOp
    from aiowax._engine.ops.windows.state import KeyState

    start = datetime.fromisoformat("2024-01-01T00:00:00+00:00")
    flow = Dataflow()
    flow.collect_window(
        "w",
        EventClockConfig(lambda v: v, timedelta(0)),
        TumblingWindow(timedelta(hours=1), start),
    )
    step = flow.steps[0]
    op = CollectWindowOp(step, StepEnv(kind_of(step), 0, 1, current_clock()))  # type: ignore[arg-type]
    state = op.keys["k"] = KeyState(0, 0)
    state.windows = {0: [(0, "x")]}
    for i in range(1000):
        state.wm_loop = i  # the deadline a microsecond later each time
        op.reschedule({"k"}, 0.0)
    assert len(op.heap) == 1
    assert op.timers == {op.heap[0]: "k"}  # a deadline of one key holds the key alone


@pytest.mark.asyncio
async def test_the_memo_of_forgotten_watermarks_drops_the_oldest_past_its_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The memo keeps the newest watermarks, at most its bound; the oldest go
    # an eighth of the bound at a time (a dict rebuilt), each marked for the
    # next snapshot (which saves it as deleted).
    from aiowax._engine.clock import current_clock
    from aiowax._engine.kinds import kind_of
    from aiowax._engine.ops.base import StepEnv
    from aiowax._engine.ops.windows import op as window_op
    from aiowax._engine.ops.windows.kinds import CollectWindowOp
    from aiowax._engine.ops.windows.state import KeyState

    monkeypatch.setattr(window_op, "FORGOTTEN_WATERMARKS", 16)
    flow = Dataflow()
    flow.collect_window("w", EventClockConfig(lambda v: v, timedelta(0)), SessionWindow(secs(1)))
    step = flow.steps[0]
    op = CollectWindowOp(step, StepEnv(kind_of(step), 0, 1, current_clock()))  # type: ignore[arg-type]
    op.dirty = set()
    for i in range(40):
        op._forget(f"k{i}", KeyState(1000 + i, i))
        assert len(op.forgotten) <= 16
    kept = len(op.forgotten)
    assert kept >= 16 - 16 // 8
    assert list(op.forgotten) == [f"k{i}" for i in range(40 - kept, 40)]
    # What is kept is the watermark: ``KeyState(kept, 0)`` has it back.
    assert op.forgotten["k39"] == 1000 + 39 - 39
    assert op.dirty == {f"k{i}" for i in range(40 - kept)}


def _sliding_counts(step: Callable[[Dataflow, EventClockConfig, SlidingWindow], None]) -> list[int]:
    """Three values ``{"n": 1}`` at 1, 2, 3 s in 10 s windows every 5 s: each window's count."""
    out: list[Any] = []
    flow = Dataflow()
    items = [("a", {"t": T0 + timedelta(seconds=s), "n": 1}) for s in (1, 2, 3)]
    flow.input("inp", TestingSource(items))
    clock = EventClockConfig(lambda v: v["t"], timedelta(0))
    step(flow, clock, SlidingWindow(timedelta(seconds=10), timedelta(seconds=5), T0))
    flow.output("out", TestingSink(out))
    run_main(flow)
    return [acc["n"] for _key, (_meta, acc) in sorted(out, key=lambda kv: kv[1][0])]


def _add_in_place(acc: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    acc["n"] += value["n"]  # the seed's own reducer style
    return acc


def test_reduce_window_sliding_starts_overlapping_windows_with_the_same_value() -> None:
    # Matches the reference on purpose (Bytewax 0.17.2 prints 5 and 5 too):
    # the first item starts both windows it falls in with its own value, so a
    # reducer that changes its accumulator in place counts it in both.
    # docs/windows.md says so, and what to use instead.
    in_place = _sliding_counts(lambda f, c, w: f.reduce_window("r", c, w, _add_in_place))
    assert in_place == [5, 5]
    new = _sliding_counts(
        lambda f, c, w: f.reduce_window("r", c, w, lambda a, v: {**a, "n": a["n"] + v["n"]})
    )
    assert new == [3, 3]
    folded = _sliding_counts(
        lambda f, c, w: f.fold_window("r", c, w, lambda: {"n": 0}, _add_in_place)
    )
    assert folded == [3, 3]
