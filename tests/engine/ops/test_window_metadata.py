"""`WindowMetadata` as the window operators produce it (`aiowax._engine.ops.windows`).

The configurations themselves (validation, pickling, comparison of
`WindowMetadata`) are covered in ``tests/test_dataflow.py``; here: which
``[open_time, close_time)`` a result carries, in UTC, exactly, whatever the
time zone of the inputs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSink, TestingSource, run_main
from aiowax.window import (
    EventClockConfig,
    SessionWindow,
    SlidingWindow,
    TumblingWindow,
    WindowConfig,
    WindowMetadata,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
ZONES = [
    timezone(timedelta(hours=5, minutes=30)),
    timezone(timedelta(hours=-8)),
    timezone(timedelta(hours=13, minutes=45, seconds=30)),
]


def collect(
    values: list[tuple[str, datetime]],
    window: WindowConfig,
    wait: timedelta = timedelta(0),
    on_late: Any = None,
) -> list[tuple[str, WindowMetadata, list[datetime]]]:
    """``collect_window`` over ``(key, time)`` items sent in one batch."""
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource([(k, t) for k, t in values], len(values) + 1))
    flow.collect_window("win", EventClockConfig(lambda t: t, wait, on_late=on_late), window)
    flow.output("out", TestingSink(out))
    run_main(flow)
    return sorted((k, m, ts) for k, (m, ts) in out)


def assert_utc(dt: datetime) -> None:
    assert dt.tzinfo is not None
    assert dt.utcoffset() == timedelta(0)


@pytest.mark.parametrize("zone", ZONES, ids=str)
def test_tumbling_metadata_is_in_utc_whatever_the_zone_of_align_to(zone: timezone) -> None:
    window = TumblingWindow(timedelta(seconds=10), T0.astimezone(zone))
    [(_, metadata, _)] = collect([("a", T0 + timedelta(seconds=3))], window)
    assert metadata == WindowMetadata(T0, T0 + timedelta(seconds=10))
    assert_utc(metadata.open_time)
    assert_utc(metadata.close_time)


@pytest.mark.parametrize("zone", ZONES, ids=str)
@pytest.mark.parametrize(
    "window",
    [TumblingWindow(timedelta(seconds=10), T0), SessionWindow(timedelta(seconds=5))],
    ids=["tumbling", "session"],
)
def test_item_times_in_other_zones_are_normalised_to_utc(
    zone: timezone, window: WindowConfig
) -> None:
    utc_times = [T0 + timedelta(seconds=s) for s in (1, 4, 8)]
    got = collect([("a", t.astimezone(zone)) for t in utc_times], window)
    expected_meta = (
        WindowMetadata(T0, T0 + timedelta(seconds=10))
        if isinstance(window, TumblingWindow)
        else WindowMetadata(utc_times[0], utc_times[-1])
    )
    [(_, metadata, values)] = got
    assert metadata == expected_meta
    assert_utc(metadata.open_time)
    assert_utc(metadata.close_time)
    # The values are passed on as they came, only their times are converted.
    assert values == utc_times
    assert [v.utcoffset() for v in values] == [zone.utcoffset(None)] * 3


def test_a_mix_of_zones_is_placed_by_instant() -> None:
    # 00:00:09 UTC written in three zones, and 00:00:11 UTC: two windows.
    items = [("a", (T0 + timedelta(seconds=9)).astimezone(z)) for z in ZONES]
    items.append(("a", (T0 + timedelta(seconds=11)).astimezone(ZONES[0])))
    got = collect(items, TumblingWindow(timedelta(seconds=10), T0))
    assert [(m, len(v)) for _, m, v in got] == [
        (WindowMetadata(T0, T0 + timedelta(seconds=10)), 3),
        (WindowMetadata(T0 + timedelta(seconds=10), T0 + timedelta(seconds=20)), 1),
    ]


def test_on_late_gets_utc_times() -> None:
    late: list[Any] = []
    zone = ZONES[1]
    items = [
        ("a", (T0 + timedelta(seconds=12)).astimezone(zone)),
        ("a", (T0 + timedelta(seconds=5)).astimezone(zone)),
    ]
    collect(items, TumblingWindow(timedelta(seconds=10), T0), on_late=lambda *a: late.append(a))
    [(key, value, item_time, watermark)] = late
    assert (key, value) == items[1]
    assert item_time == T0 + timedelta(seconds=5)
    assert watermark == T0 + timedelta(seconds=12)
    assert_utc(item_time)
    assert_utc(watermark)


def test_session_metadata_is_first_and_last_item_time() -> None:
    # Arrival order does not matter: the session spans its earliest to its
    # latest item; a lone item gives open_time == close_time.
    def s(x: float) -> datetime:
        return T0 + timedelta(seconds=x)

    got = collect(
        [("a", s(4)), ("a", s(1)), ("a", s(6)), ("a", s(2.5)), ("b", s(3)), ("a", s(30))],
        SessionWindow(timedelta(seconds=3)),
        wait=timedelta(seconds=60),
    )
    assert [(k, m) for k, m, _ in got] == [
        ("a", WindowMetadata(s(1), s(6))),
        ("a", WindowMetadata(s(30), s(30))),
        ("b", WindowMetadata(s(3), s(3))),
    ]
    assert got[0][2] == [s(1), s(2.5), s(4), s(6)]


def test_sliding_metadata_spans_length_from_each_start() -> None:
    length, offset = timedelta(seconds=10), timedelta(seconds=4)
    align = T0 + timedelta(hours=1)  # windows before it have negative numbers
    t = T0 + timedelta(seconds=9)
    got = collect([("a", t)], SlidingWindow(length, offset, align))
    metas = [m for _, m, _ in got]
    assert metas == [
        WindowMetadata(T0 + timedelta(seconds=s), T0 + timedelta(seconds=s) + length)
        for s in (0, 4, 8)
    ]
    for m in metas:
        assert m.open_time <= t < m.close_time
        assert (m.open_time - align) % offset == timedelta(0)


def test_microsecond_boundaries_are_exact() -> None:
    # 1.5 s windows starting 1 µs after T0: no float rounding at the edges.
    length = timedelta(seconds=1, microseconds=500_000)
    align = T0 + US
    window = TumblingWindow(length, align)
    items = [
        ("a", align - US),  # last µs of the window before
        ("a", align),  # first µs of window 0
        ("a", align + length - US),  # last µs of window 0
        ("a", align + length),  # first µs of window 1
    ]
    got = collect(items, window)
    assert [(m, v) for _, m, v in got] == [
        (WindowMetadata(align - length, align), [align - US]),
        (WindowMetadata(align, align + length), [align, align + length - US]),
        (WindowMetadata(align + length, align + 2 * length), [align + length]),
    ]


def test_far_windows_do_not_drift() -> None:
    # A million windows of 333,333 µs away from align_to: a float seconds
    # computation would be off by microseconds here.
    offset = timedelta(microseconds=333_333)
    length = timedelta(microseconds=1_000_001)
    align = T0 + timedelta(microseconds=7)
    k = 1_000_003
    t = align + k * offset + timedelta(microseconds=5)
    got = collect([("a", t)], SlidingWindow(length, offset, align))
    opens = [m.open_time for _, m, _ in got]
    # 3 * 333,333 + 5 >= 1,000,001: three windows hold t.
    assert opens == [align + j * offset for j in (k - 2, k - 1, k)]
    for _, m, _ in got:
        assert m.close_time - m.open_time == length


def test_times_before_the_unix_epoch() -> None:
    length = timedelta(seconds=7)
    t = datetime(1900, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    [(_, m, values)] = collect([("a", t)], TumblingWindow(length, T0))
    assert m.open_time <= t < m.close_time
    assert m.close_time - m.open_time == length
    assert (T0 - m.open_time) % length == timedelta(0)
    assert values == [t]
    assert_utc(m.open_time)


def test_metadata_of_equal_windows_of_different_keys_compare_equal() -> None:
    got = collect(
        [("a", T0 + timedelta(seconds=1)), ("b", (T0 + timedelta(seconds=2)).astimezone(ZONES[0]))],
        TumblingWindow(timedelta(seconds=10), T0),
    )
    (_, meta_a, _), (_, meta_b, _) = got
    assert meta_a == meta_b
    assert hash(meta_a) == hash(meta_b)
    assert repr(meta_a) == repr(meta_b)
