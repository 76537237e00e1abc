"""Argument checks: every public size takes the same checker, so the same errors.

Each public constructor or function that takes a size (a batch size, a
buffer, a count of files) rejects a non-int and a bool with `TypeError` and a
size below 1 with `ValueError`, and its message starts with the class or
function called and names the parameter. The checkers themselves are in
`aiowax._checks`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aiowax._checks import aware_datetime, callable_arg, describe, positive_int, timedelta_arg
from aiowax.connectors.files import CSVSource, DirSink, DirSource, FileSource
from aiowax.connectors.inproc import BroadcastSink, IterableSource, PushSource
from aiowax.dataflow import Dataflow
from aiowax.inputs import SimplePollingSource, batch, batch_async
from aiowax.recovery import init_db_dir
from aiowax.testing import TestingSource


async def _numbers() -> AsyncIterator[int]:
    yield 1


def _stream_source(tmp_path: Path, size: Any) -> object:
    aiostream = pytest.importorskip("aiostream")
    from aiowax.connectors.aiostream import StreamSource

    return StreamSource(aiostream.stream.iterate([1]), size)


def _sink_stream(tmp_path: Path, size: Any) -> object:
    pytest.importorskip("aiostream")
    from aiowax.connectors.aiostream import sink_stream

    return sink_stream(BroadcastSink(), size)


def _dataflow_batch(tmp_path: Path, size: Any) -> object:
    flow = Dataflow()
    flow.input("inp", TestingSource([]))
    return flow.batch("b", size, timedelta(seconds=1))


#: (what the message starts with, parameter, call with a size): every public
#: constructor and function that takes a size.
SIZED: list[tuple[str, str, Callable[[Path, Any], object]]] = [
    ("TestingSource", "batch_size", lambda tmp, n: TestingSource([], n)),
    ("FileSource", "batch_size", lambda tmp, n: FileSource(tmp / "f", n)),
    ("DirSource", "batch_size", lambda tmp, n: DirSource(tmp, "*", n)),
    ("CSVSource", "batch_size", lambda tmp, n: CSVSource(tmp / "f.csv", n)),
    ("DirSink", "file_count", lambda tmp, n: DirSink(tmp, n)),
    ("PushSource", "max_buffer", lambda tmp, n: PushSource(max_buffer=n)),
    ("PushSource", "batch_size", lambda tmp, n: PushSource(batch_size=n)),
    ("IterableSource", "batch_size", lambda tmp, n: IterableSource(_numbers(), n)),
    ("StreamSource", "batch_size", _stream_source),
    ("BroadcastSink", "buffer", lambda tmp, n: BroadcastSink(n)),
    ("BroadcastSink.subscribe", "buffer", lambda tmp, n: BroadcastSink().subscribe(n)),
    ("sink_stream", "buffer", _sink_stream),
    ("batch", "batch_size", lambda tmp, n: batch([1, 2], n)),
    (
        "batch_async",
        "batch_size",
        lambda tmp, n: batch_async(_numbers(), timedelta(seconds=1), n),
    ),
    ("init_db_dir", "count", lambda tmp, n: init_db_dir(tmp / "rec", n)),
    ("batch step 'b'", "max_size", _dataflow_batch),
]

BAD_SIZES: list[tuple[object, type[Exception], str]] = [
    ("10", TypeError, "must be an int"),
    (1.0, TypeError, "must be an int"),
    (None, TypeError, "must be an int"),
    (True, TypeError, "must be an int"),
    (False, TypeError, "must be an int"),
    (0, ValueError, "must be positive"),
    (-1, ValueError, "must be positive"),
]


#: Sizes for which ``None`` asks for the default (the sink's buffer).
NONE_IS_DEFAULT = {"BroadcastSink.subscribe", "sink_stream"}


@pytest.mark.parametrize(
    ("where", "name", "call", "bad", "error", "rule"),
    [
        pytest.param(where, name, call, bad, error, rule, id=f"{where}-{name}-{bad!r}")
        for where, name, call in SIZED
        for bad, error, rule in BAD_SIZES
        if not (bad is None and where in NONE_IS_DEFAULT)
    ],
)
def test_sizes_are_checked_alike(
    tmp_path: Path,
    where: str,
    name: str,
    call: Callable[[Path, Any], object],
    bad: object,
    error: type[Exception],
    rule: str,
) -> None:
    with pytest.raises(error) as info:
        call(tmp_path, bad)
    # Exactly the type asked for: a ValueError subclass would not do for TypeError.
    assert type(info.value) is error
    assert str(info.value) == f"{where}: {name} {rule}, got {bad!r}"


@pytest.mark.parametrize(("where", "name", "call"), SIZED, ids=[f"{w}-{n}" for w, n, _ in SIZED])
def test_sizes_accept_one(
    tmp_path: Path, where: str, name: str, call: Callable[[Path, Any], object]
) -> None:
    # The smallest good size passes, so the failures above come from the size.
    call(tmp_path, 1)
    if where in NONE_IS_DEFAULT:
        call(tmp_path, None)


def test_subscribe_default_buffer_is_the_sinks() -> None:
    sink: BroadcastSink[int] = BroadcastSink(buffer=7)
    assert sink.subscribe().buffer == 7
    assert sink.subscribe(None).buffer == 7
    assert sink.subscribe(3).buffer == 3


def test_batch_async_checks_its_timeout() -> None:
    with pytest.raises(TypeError, match=r"^batch_async: timeout must be a datetime\.timedelta"):
        batch_async(_numbers(), 5, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^batch_async: timeout must not be negative"):
        batch_async(_numbers(), timedelta(seconds=-1), 1)
    batch_async(_numbers(), timedelta(0), 1)  # zero: hand over what is there


class _Poller(SimplePollingSource[int]):
    def next_item(self) -> int:
        return 1


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"interval": 10}, TypeError, "interval must be a datetime.timedelta"),
        ({"interval": timedelta(0)}, ValueError, "interval must be positive"),
        ({"interval": timedelta(-1)}, ValueError, "interval must be positive"),
        (
            {"interval": timedelta(1), "align_to": "2024-01-01"},
            TypeError,
            "align_to must be a datetime.datetime",
        ),
        (
            {"interval": timedelta(1), "align_to": datetime(2024, 1, 1)},
            TypeError,
            "align_to must be timezone-aware",
        ),
    ],
)
def test_simple_polling_source_checks(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        _Poller(**kwargs)
    assert type(info.value) is error
    assert str(info.value).startswith(f"SimplePollingSource: {message}, got ")


def test_simple_polling_source_accepts_good_arguments() -> None:
    _Poller(timedelta(seconds=1))
    _Poller(timedelta(seconds=1), datetime(2024, 1, 1, tzinfo=UTC))


# -- the checkers ------------------------------------------------------------------------


def test_positive_int() -> None:
    assert positive_int("f", "n", 1) == 1
    assert positive_int("f", "n", 10**30) == 10**30
    with pytest.raises(TypeError, match=r"^f: n must be an int, got True$"):
        positive_int("f", "n", True)
    with pytest.raises(ValueError, match=r"^f: n must be positive, got 0$"):
        positive_int("f", "n", 0)


def test_timedelta_arg() -> None:
    second = timedelta(seconds=1)
    assert timedelta_arg("f", "t", second, allow_zero=False) is second
    assert timedelta_arg("f", "t", timedelta(0), allow_zero=True) == timedelta(0)
    with pytest.raises(ValueError, match=r"^f: t must be positive, got "):
        timedelta_arg("f", "t", timedelta(0), allow_zero=False)
    with pytest.raises(ValueError, match=r"^f: t must not be negative, got "):
        timedelta_arg("f", "t", -second, allow_zero=True)
    with pytest.raises(TypeError, match=r"^f: t must be a datetime\.timedelta, got 1\.0$"):
        timedelta_arg("f", "t", 1.0, allow_zero=True)


def test_aware_datetime() -> None:
    from datetime import timezone

    paris_summer = timezone(timedelta(hours=2))
    local = datetime(2024, 6, 1, 12, tzinfo=paris_summer)
    utc = aware_datetime("f", "d", local)
    assert utc == local
    assert utc.tzinfo is UTC
    # TypeError, as Bytewax 0.17.2 raised for a naive align_to (matched on purpose).
    with pytest.raises(TypeError, match=r"^f: d must be timezone-aware, got the naive "):
        aware_datetime("f", "d", datetime(2024, 1, 1))
    with pytest.raises(TypeError, match=r"^f: d must be a datetime\.datetime, got "):
        aware_datetime("f", "d", "2024-01-01")


def test_callable_arg_and_describe() -> None:
    assert callable_arg("f", "fn", len) is len
    with pytest.raises(TypeError, match=r"^f: fn must be callable, got 3$"):
        callable_arg("f", "fn", 3)
    assert describe("x" * 10) == repr("x" * 10)
    long = describe("x" * 500, limit=20)
    assert len(long) == 20
    assert long.endswith("...")
    assert re.fullmatch(r"'x+\.\.\.", long)


# -- describe: error messages never fail while describing an item -------------------------


class _BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("session is closed")


def test_describe_survives_a_failing_repr() -> None:
    from aiowax._checks import describe

    assert describe(_BrokenRepr()) == "<_BrokenRepr object (its repr raised RuntimeError)>"


def test_a_bad_item_with_a_failing_repr_names_the_step_and_keeps_earlier_output() -> None:
    # U7: the message is built without the item's repr; the items before it
    # are written, and the caller gets the TypeError, not an internal group.
    from aiowax.dataflow import Dataflow
    from aiowax.testing import TestingSink, TestingSource, run_main

    out: list[object] = []
    flow = Dataflow()
    flow.input("inp", TestingSource([("a", 1), ("b", 2), _BrokenRepr(), ("c", 3)], batch_size=4))
    flow.stateful_map("count", lambda: 0, lambda s, v: (s + 1, s + 1))
    flow.output("out", TestingSink(out))
    with pytest.raises(TypeError, match=r"step 'count' needs .*_BrokenRepr object"):
        run_main(flow)
    assert out == [("a", 1), ("b", 1)]
