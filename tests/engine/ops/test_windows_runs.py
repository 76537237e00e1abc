"""reduce_window and fold_window fold a key's items in runs.

On windows a whole number of offsets long (tumbling windows, and sliding
ones such as 60 s every 10 s), `fast_path._place_in_runs` folds the items
of a key in the batch's newest pane (a span of one offset, whose times lie
in the same windows) without looking at their times in µs, at the
watermark or at the key's window table, and ends the run (the accumulators
go in their windows, the watermark moves) before any other item of that
key. These cases are the ones the runs take: UTC times,
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
from aiowax.window import SlidingWindow, TumblingWindow


@st.composite
def in_order_cases(draw: st.DrawFn, widths: tuple[int, int] = (1, 1)) -> dict[str, Any]:
    """Items mostly in order; windows of ``width`` offsets (1: tumbling)."""
    offset = draw(st.integers(2, 12))
    width = draw(st.integers(*widths))
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
        "length": offset * width,
        "offset": offset,
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
    length, align = case["length"], case["align"]
    check_against_model(case, "tumbling", TumblingWindow(length * US, T0 + align * US))


def check_against_model(case: dict[str, Any], kind: str, window: Any) -> None:
    """The three operators over ``case``'s items give what the model says, late items too."""
    items, wait = case["items"], case["wait"]
    offset = case.get("offset", case["length"])
    expected, late = model(kind, items, wait, case["length"], offset, case["align"], 1)
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


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(in_order_cases(widths=(2, 4)))
# Windows 15 long every 5: runs of "a" and "b" in the pane [10, 15), whose
# times are in [0, 15), [5, 20) and [10, 25); "a" at 16 is in a newer pane,
# so both runs end, and "b"'s next item takes the general path, on time.
@example(
    {
        "items": [("a", 11), ("b", 12), ("a", 13), ("b", 14), ("a", 16), ("b", 12)],
        "length": 15,
        "offset": 5,
        "wait": 0,
        "align": 0,
    }
)
# Windows 8 long every 2: "a" at 5 ends the run at 1 and starts one at 5,
# which moves "a"'s watermark to 5; of the next item's windows at 1 ([-6, 2),
# [-4, 4), [-2, 6), [0, 8)) the two that closed by 5 miss it, the other two
# take it, and it starts no run.
@example(
    {
        "items": [("a", 1), ("a", 1), ("a", 5), ("a", 5), ("a", 1)],
        "length": 8,
        "offset": 2,
        "wait": 0,
        "align": 0,
    }
)
# Windows 9 long every 3: "a" at 13 and at 14 miss two of their three windows
# (closed at 15 and 18 by the watermark 20) and go in the third, with no run.
@example(
    {
        "items": [("a", 20), ("a", 13), ("a", 14), ("a", 21)],
        "length": 9,
        "offset": 3,
        "wait": 0,
        "align": 0,
    }
)
def test_sliding_runs_match_the_model(case: dict[str, Any]) -> None:
    length, offset, align = case["length"], case["offset"], case["align"]
    check_against_model(case, "sliding", SlidingWindow(length * US, offset * US, T0 + align * US))


def test_sliding_runs_are_taken(monkeypatch: Any) -> None:
    """Sliding windows a whole number of offsets long go through runs, one per key."""
    ended: list[range] = []
    end_run = fast_path._end_run

    def counting(run: Any, now_us: int, wait: int) -> None:
        assert run[1] is not run[2]  # the run folded a newer item
        ended.append(run[4])
        end_run(run, now_us, wait)

    monkeypatch.setattr(fast_path, "_end_run", counting)
    items = [("a", 11), ("b", 12), ("a", 13), ("b", 14)]
    expected, late = model("sliding", items, 0, 15, 5, 0, 1)
    got, _ = run_flow(items, SlidingWindow(15 * US, 5 * US, T0), 0, UTC, False)
    assert got["reduce"] == expected["reduce"] and got["fold"] == expected["fold"]
    assert late == 0
    # The pane [10, 15) is in windows 0, 1 and 2 ([0, 15), [5, 20), [10, 25)):
    # one run per key for each of fold_window and reduce_window.
    assert ended == [range(0, 3)] * 4


def test_sliding_windows_of_other_lengths_take_no_runs(monkeypatch: Any) -> None:
    """A window 7 long every 5: a pane's times are not all in the same windows."""

    def no_runs(*args: Any) -> None:
        raise AssertionError("a run was taken")

    monkeypatch.setattr(fast_path, "_place_in_runs", no_runs)
    items = [("a", 11), ("b", 12), ("a", 13), ("b", 14), ("a", 17)]
    expected, _ = model("sliding", items, 0, 7, 5, 0, 1)
    got, _ops = run_flow(items, SlidingWindow(7 * US, 5 * US, T0), 0, UTC, False)
    assert got == expected
