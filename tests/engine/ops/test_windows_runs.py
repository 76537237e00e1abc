"""Tumbling windows of reduce_window and fold_window fold a key's items in runs.

`fast_path._place_in_runs` folds the items of a key in the batch's newest
window without looking at their times in µs or at the watermark, and ends
the run (the accumulator goes in the window, the watermark moves) before any
other item of that key. These cases are the ones the runs take: UTC times,
mostly in order, a few keys, with late items, items of older windows and of
newer ones in between; the model of `test_windows_property` says what comes
out, and how many items are late.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from test_windows_property import T0, US, model, run_flow

from aiowax._engine.ops.windows import fast_path
from aiowax.window import TumblingWindow


@st.composite
def in_order_cases(draw: st.DrawFn) -> dict[str, Any]:
    length = draw(st.integers(2, 12))
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from("abc"),
                # Mostly forward, by less than a window; now and then back.
                st.one_of(st.integers(0, 3), st.integers(0, 3), st.integers(-15, 15)),
            ),
            min_size=1,
            max_size=60,
        )
    )
    items, t = [], 0
    for key, step in steps:
        t += step
        items.append((key, t))
    return {
        "items": items,
        "length": length,
        "wait": draw(st.sampled_from([0, 0, 1, 3, 1000])),
        "align": draw(st.integers(-5, 5)),
    }


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(in_order_cases())
# A run of "a" in [0, 10), then a newer item of "a" ends it and closes
# [0, 10): the next item of "a" at 9 is late.
@example(
    {
        "items": [("a", 1), ("a", 2), ("a", 5), ("a", 12), ("a", 9)],
        "length": 10,
        "wait": 0,
        "align": 0,
    }
)
# "b"'s item in a newer window makes it the hot one: "a"'s run ends, and its
# next item takes the general path (one window, its watermark moved for 8).
@example(
    {
        "items": [("a", 1), ("a", 8), ("b", 11), ("a", 3), ("a", 9), ("a", 12)],
        "length": 10,
        "wait": 0,
        "align": 0,
    }
)
# The run of "a" in [0, 10) folds 8: ending it (for the item at -1) moves
# the watermark to 8 - 3, which closed [-10, 0): the item at -1 is late.
@example({"items": [("a", 1), ("a", 8), ("a", -1)], "length": 10, "wait": 3, "align": 0})
def test_runs_match_the_model(case: dict[str, Any]) -> None:
    items, length, wait, align = case["items"], case["length"], case["wait"], case["align"]
    expected, late = model("tumbling", items, wait, length, length, align, 1)
    window = TumblingWindow(length * US, T0 + align * US)
    got, ops = run_flow(items, window, wait, UTC, False)
    for op in ("fold", "reduce", "collect"):
        assert got[op] == expected[op], op
        assert ops[op].late_count == late, op
        assert ops[op].state_size() == 0, op


def test_runs_are_taken(monkeypatch: Any) -> None:
    """The cases above do go through runs (not only the general path)."""
    ended: list[bool] = []
    end_run = fast_path._end_run

    def counting(run: Any, now_us: int, wait: int) -> None:
        ended.append(run[1] is not run[2])  # the run folded a newer item
        end_run(run, now_us, wait)

    monkeypatch.setattr(fast_path, "_end_run", counting)
    items = [("a", 1), ("b", 2), ("a", 3), ("b", 4), ("a", 5)]
    expected, late = model("tumbling", items, 0, 10, 10, 0, 1)
    got, _ = run_flow(items, TumblingWindow(10 * US, T0), 0, UTC, False)
    assert got["reduce"] == expected["reduce"] and got["fold"] == expected["fold"]
    assert late == 0
    # One run per key for each of fold_window and reduce_window, each with
    # a newer item than its first.
    assert ended == [True] * 4
