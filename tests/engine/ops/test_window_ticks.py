"""Tumbling and sliding windows close in ticks of their own (`ticks.tick_windows`).

With sync user code on the event clock, the due windows of a tick are taken
out by an inlined loop: it must close each window at its key's loop time,
in window order, with the right metadata (which the keys closing one window
in a tick share), a bounded number of keys a tick, and still refuse a sync
function that returns an awaitable. On the virtual clock: nothing really
sleeps.
"""

from __future__ import annotations

from typing import Any

import pytest
from test_windows import (
    OPS,
    T0,
    Script,
    event_clock,
    late_count,
    meta,
    operators,
    run,
    secs,
    virtual,
    window_flow,
)

from aiowax._engine.ops.windows import op as window_op
from aiowax._engine.ops.windows.ticks import tick_windows
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSink, TestingSource, run_main
from aiowax.window import SlidingWindow, TumblingWindow, WindowConfig

WINDOWS: dict[str, WindowConfig] = {
    "tumbling": TumblingWindow(secs(10), T0),
    "sliding": SlidingWindow(secs(10), secs(5), T0),
}


def closed(window: str, key: str, label: str, t: float) -> list[tuple[float, Any]]:
    """``(loop time, output)`` of the windows of one item at time ``t`` seen at loop time 0."""
    if window == "tumbling":
        opens = [t // 10 * 10]
    else:
        opens = [o for o in (t // 5 * 5 - 5, t // 5 * 5) if o <= t < o + 10]
    return [(o + 10 - t, (key, meta(o, o + 10), label)) for o in opens]


@virtual
@pytest.mark.parametrize("window", sorted(WINDOWS))
@pytest.mark.parametrize("op", OPS)
async def test_a_tick_closes_a_bounded_number_of_keys_and_the_rest_right_after(
    window: str, op: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3 keys a tick (6 after a batch of 3): the windows of 10 keys that
    # come due at one loop time go out over several ticks, all at that time.
    monkeypatch.setattr(window_op, "CLOSE_PER_TICK", 3)
    ticks: list[int] = []

    def counted(op: Any, budget: int) -> list[Any]:
        got = tick_windows(op, budget)
        ticks.append(len({key for key, _ in got}))
        return got

    monkeypatch.setattr(window_op, "tick_windows", counted)
    first = [(f"k{i}", (3, f"a{i}")) for i in range(10)]
    script = Script(first, 3600.0)
    flow, out = window_flow(script, op, event_clock(), WINDOWS[window], stamp=True)
    with operators() as ops:
        await run(flow)
    expected = [row for i in range(10) for row in closed(window, f"k{i}", f"a{i}", 3)]
    assert sorted(out) == sorted(expected)
    # Nothing is due at the tick after the batch; the timer's take 3 keys each.
    assert max(ticks) <= 3 and sum(ticks) >= 10, ticks
    assert late_count(ops) == 0
    assert ops[0].state_size() == 0


#: The labels of "a"'s items in the order each operator gives them: fold and
#: reduce in arrival order, collect by time.
ORDER = {
    "fold": [("z", 8), ("x", 1), ("y", 4)],
    "reduce": [("z", 8), ("x", 1), ("y", 4)],
    "collect": [("x", 1), ("y", 4), ("z", 8)],
}


@virtual
@pytest.mark.parametrize("op", OPS)
async def test_a_key_closing_several_windows_in_a_tick_emits_them_in_window_order(
    op: str,
) -> None:
    # "a" holds the windows of 1, 4 and 8 (windows 10 long every 2, so
    # [-8, 2) ... [8, 18)); its item at 30 moves its watermark past all
    # of them: the tick after that batch closes them, oldest first.
    # They came out of order (a wait of 10 s keeps them on time), so the
    # key's table holds them out of order too.
    script = Script(
        [("a", (8, "z")), ("a", (1, "x")), ("a", (4, "y"))],
        [("a", (30, "w"))],
        3600.0,
    )
    window = SlidingWindow(secs(10), secs(2), T0)
    flow, out = window_flow(script, op, event_clock(10), window, stamp=True)
    await run(flow)
    # Closed by the tick at loop time 0, not at the end of input (3600).
    at_once = [row for when, row in out if when == 0.0]
    assert [m for _, m, _ in at_once] == [meta(o, o + 10) for o in range(-8, 9, 2)]
    assert [got for _, _, got in at_once] == [
        "".join(x for x, t in ORDER[op] if o <= t < o + 10) for o in range(-8, 9, 2)
    ]


@pytest.mark.parametrize("window", sorted(WINDOWS))
def test_a_sync_reducer_returning_an_awaitable_is_refused_when_its_window_closes(
    window: str,
) -> None:
    # The first window's value is an item (one item: no reducer call), and
    # it closes first; the next window's reducer returns a coroutine.
    async def later(a: Any, b: Any) -> Any:
        return a

    def reducer(a: Any, b: Any) -> Any:
        return later(a, b)

    flow = Dataflow()
    items = [("a", (1, "x")), ("a", (11, "y")), ("a", (12, "z")), ("a", (31, "w"))]
    flow.input("inp", TestingSource(items, batch_size=1))
    flow.reduce_window("win", event_clock(), WINDOWS[window], reducer)
    out: list[Any] = []
    flow.output("out", TestingSink(out))
    with pytest.raises(TypeError, match="returned an awaitable") as info:
        run_main(flow)
    assert "'win'" in str(info.value)


@pytest.mark.parametrize("window", sorted(WINDOWS))
@pytest.mark.parametrize("op", OPS)
def test_the_keys_closing_a_window_at_the_end_of_input_share_its_metadata(
    window: str, op: str
) -> None:
    # As in a tick: 1,000 keys open in one window hold one WindowMetadata at
    # the end of the input, not 1,000 (a million keys' last windows held
    # 150 bytes each of them, more than their state).
    flow, out = window_flow(
        TestingSource([(f"k{i}", (3, f"a{i}")) for i in range(1000)], 1000),
        op,
        event_clock(),
        WINDOWS[window],
    )
    run_main(flow)
    metas = [m for _key, m, _labels in out]
    assert len(out) == 1000 * (1 if window == "tumbling" else 2)
    assert len({id(m) for m in metas}) == len(set(metas))  # one object per window
