"""Sessions close on time, one-item sessions included (issue 16).

A key whose only session holds one item (the common case when keys are
many) is closed by a path of its own (`ticks.tick_sessions`): it must
close at its item's loop time + gap (+ the wait), like any session, give
the same metadata and value, and mix with keys of longer sessions in the
same tick. On the virtual clock: nothing really sleeps.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from test_windows import (
    OPS,
    Script,
    at,
    build,
    event_clock,
    fold,
    items,
    late_count,
    loop_time,
    meta,
    operators,
    reduce,
    run,
    secs,
    virtual,
    window_flow,
)

from aiowax._engine.ops.windows import op as window_op
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSink, TestingSource, run_main
from aiowax.window import EventClockConfig, SessionWindow


@virtual
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("wait", [0, 0.5])
async def test_one_item_sessions_close_at_their_loop_time_plus_the_gap(
    op: str, wait: float
) -> None:
    # A key's watermark is its item's time (less the wait) at the loop time
    # the item came, so a lone session closes gap + wait after that loop
    # time, however many keys close in the same tick.
    late: list[Any] = []
    script = Script(
        items("a", (0, "a")) + items("b", (0.5, "b")) + items("e", (0, "e1"), (1, "e2")),
        0.25,
        items("c", (1, "c")),
        1.0,
        items("d", (5, "d")),
        2.0,
        # ``c`` again at loop time 3.25, after its session closed: its
        # watermark, 1 - wait at loop time 0.25, goes on from the memo of
        # forgotten keys: 4 - wait now.
        items("c", (3, "late")),
        3600.0,
    )
    clock = event_clock(wait, on_late=lambda *args: late.append(args))
    flow, out = window_flow(script, op, clock, SessionWindow(secs(2)), stamp=True)
    with operators() as ops:
        await run(flow)
    assert sorted(out) == [
        (2.0 + wait, ("a", meta(0, 0), "a")),
        (2.0 + wait, ("b", meta(0.5, 0.5), "b")),
        (2.0 + wait, ("e", meta(0, 1), "e1e2")),
        (2.25 + wait, ("c", meta(1, 1), "c")),
        (3.25 + wait, ("d", meta(5, 5), "d")),
    ]
    assert late == [("c", (3, "late"), at(3), at(4 - wait))]
    assert late_count(ops) == 1
    assert ops[0].state_size() == 0


@virtual
@pytest.mark.parametrize("op", OPS)
async def test_one_item_sessions_without_metadata(op: str) -> None:
    # A flow reading a Bytewax 0.17.2 input emits ``(key, value)``.
    def no_metadata() -> None:
        for step in ops:
            step.emit_metadata = False

    script = Script(no_metadata, items("a", (0, "a")), 1.0, items("b", (0, "b"), (1, "c")), 3600.0)
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", script)
    window = SessionWindow(secs(2))
    if op == "fold":
        flow.fold_window("win", event_clock(), window, build, fold)
    elif op == "reduce":
        flow.reduce_window("win", event_clock(), window, reduce)
    else:
        flow.collect_window("win", event_clock(), window)
    flow.map("stamp", lambda x: (loop_time(), x))
    flow.output("out", TestingSink(out))
    with operators() as ops:
        await run(flow)
    expected = {
        "fold": [(2.0, ("a", ["a"])), (3.0, ("b", ["b", "c"]))],
        "reduce": [(2.0, ("a", (0, "a"))), (3.0, ("b", (1, "bc")))],
        "collect": [(2.0, ("a", [(0, "a")])), (3.0, ("b", [(0, "b"), (1, "c")]))],
    }[op]
    assert sorted(out) == expected


@virtual
@pytest.mark.parametrize("op", OPS)
async def test_a_tick_closes_a_bounded_number_of_keys_and_the_rest_right_after(
    op: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 3 keys a tick (6 after a batch of 3): 10 keys due at loop time 2 go
    # out over several ticks, all at loop time 2, and so do those of a batch
    # that comes at that very time, and a two-item session among them.
    monkeypatch.setattr(window_op, "CLOSE_PER_TICK", 3)
    first = [(f"k{i}", (0, f"a{i}")) for i in range(10)]
    second = [(f"m{i}", (1, f"b{i}")) for i in range(3)] + items("k0", (5, "c"), (5.5, "d"))
    script = Script(first, 2.0, second, 3600.0)
    flow, out = window_flow(script, op, event_clock(), SessionWindow(secs(2)), stamp=True)
    with operators() as ops:
        await run(flow)
    assert sorted(out) == sorted(
        [(2.0, (f"k{i}", meta(0, 0), f"a{i}")) for i in range(10)]
        + [(4.0, (f"m{i}", meta(1, 1), f"b{i}")) for i in range(3)]
        + [(4.0, ("k0", meta(5, 5.5), "cd"))]
    )
    assert late_count(ops) == 0
    assert ops[0].state_size() == 0


def _fold_failing_on(bad: str, folded: list[str]) -> Any:
    def folder(acc: list[str], value: tuple[float, str]) -> list[str]:
        if value[1] == bad:
            raise ValueError(f"cannot fold {bad}")
        folded.append(value[1])
        return [*acc, value[1]]

    return folder


@virtual
@pytest.mark.parametrize("window", ["session", "tumbling"])
@pytest.mark.parametrize("bad", ["b", "b2"])
async def test_a_failure_while_closing_keeps_what_the_tick_closed_before_it(
    window: str, bad: str
) -> None:
    # Keys a, c and b close in one tick; the folder fails on one of b's
    # values. Sessions fold only when they
    # close: the windows of the tick closed before the failure reach the
    # sink, and the error names the step. (Before, the whole tick's output
    # was dropped with the error.) Tumbling windows fold as items come:
    # b fails when it is placed, before any window closed.
    from aiowax.window import TumblingWindow

    config = (
        SessionWindow(secs(2)) if window == "session" else TumblingWindow(secs(10), align_to=at(0))
    )
    # b comes in a batch of its own (the read of 0 s between waits, so the
    # lane sends a and c first), after a and c at the same loop time:
    # the three are due at one deadline, where keys close in the order they
    # were scheduled (within a batch, in an order that varies with the
    # hash seed), so b closes last.
    first = items("a", (0, "a")) + items("c", (0, "c"))
    then = items("b", (0, "b")) + (items("b", (0.5, "b2")) if bad == "b2" else [])
    out: list[Any] = []
    folded: list[str] = []
    flow = Dataflow()
    flow.input("inp", Script(first, 0, then, 3600.0))
    flow.fold_window("fold", event_clock(), config, list, _fold_failing_on(bad, folded))
    flow.map("values", lambda kv: (kv[0], kv[1][1]))
    flow.output("out", TestingSink(out))
    with pytest.raises(ValueError, match=f"cannot fold {bad}") as info:
        await run(flow)
    assert any("'fold'" in n for n in getattr(info.value, "__notes__", [])), info.value
    if window == "tumbling":
        assert out == []
    else:
        # a and c closed before the failure, in the tick's order.
        done = [label for label in folded if label != "b"]
        assert sorted(done) == ["a", "c"], folded
        assert out == [(label, [label]) for label in done]


# -- a key that never pauses: its only session folds its items early ------------------

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _busy_key_flow(times: list[int], gap_s: int, out: list[Any], op: str = "fold") -> Dataflow:
    """Items ``((i,), time)`` of one key at ``times`` s; the window gathers their ``i``."""
    items = [("k", ((i,), T0 + timedelta(seconds=t))) for i, t in enumerate(times)]
    flow = Dataflow()
    flow.input("inp", TestingSource(items))
    clock = EventClockConfig(lambda v: v[1], wait_for_system_duration=timedelta(hours=1))
    window = SessionWindow(timedelta(seconds=gap_s))
    if op == "fold":
        flow.fold_window("w", clock, window, tuple, lambda acc, v: acc + v[0])
    else:
        flow.reduce_window("w", clock, window, lambda a, b: (a[0] + b[0], b[1]))
    flow.output("out", TestingSink(out))
    return flow


def _ids(out: list[Any], op: str) -> list[tuple[int, ...]]:
    return [value if op == "fold" else value[0] for _key, (_meta, value) in out]


@pytest.fixture
def folds(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The length of each session list `WindowOp.compact` folds, as it does."""
    lengths: list[int] = []
    real = window_op.WindowOp.compact

    def watched(self: window_op.WindowOp, session: list[Any]) -> None:
        lengths.append(len(session))
        real(self, session)

    monkeypatch.setattr(window_op.WindowOp, "compact", watched)
    return lengths


@pytest.mark.parametrize("op", ["fold", "reduce"])
def test_a_busy_keys_session_folds_its_items_early_in_arrival_order(
    op: str, folds: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(window_op, "COMPACT_LEN", 2 + 3 * 3)  # every three items
    # 0..3 s in one session (folded early), 10 s a session of its own, then
    # 6 s bridges the two: one session, its items in arrival order.
    out: list[Any] = []
    run_main(_busy_key_flow([0, 1, 2, 3, 10, 6, 7, 8, 9], 5, out, op))
    assert folds  # it did fold early
    assert _ids(out, op) == [(0, 1, 2, 3, 4, 5, 6, 7, 8)]


def test_a_busy_key_holds_a_bounded_session(folds: list[int]) -> None:
    # 10,000 items a second apart with a gap of 5 s: one session to the end
    # of input, which held every item until it closed (helper-60).
    out: list[Any] = []
    run_main(_busy_key_flow(list(range(10_000)), 5, out))
    assert _ids(out, "fold") == [tuple(range(10_000))]
    # Folded each time it grew past the bound: never more than that held.
    assert len(folds) > 100
    assert set(folds) == {window_op.COMPACT_LEN + 3}
