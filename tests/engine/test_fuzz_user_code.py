"""Fuzz: random items and random user-code failures in every operator (issue 11).

Each example builds ``input -> one operator -> output`` with a tracked source
and sink, feeds random objects (ints, strs, None, tuples, ``(key, value)``
pairs with str / str-subclass / non-str keys, objects whose ``repr`` raises)
and makes user code raise one random exception, in the operator (on the
sentinel item `FAIL`), in the source's ``next_batch`` or in the sink's
``write_batch``; sync, ``async def``, or a plain function returning a
coroutine. A plain-Python model of the operator gives the output expected
before the failure (and after the end of input, when nothing fails).

Checked on every run: it ends within a watchdog; the caller gets the user's
own exception object (a ``RuntimeError`` caused by it for ``StopIteration``,
``StopAsyncIteration`` and a ``CancelledError`` raised by user code), never
an ``ExceptionGroup``, with a note naming the step and role; a non-pair item
in a keyed step gives a ``TypeError`` naming the step; the output produced
before the failure reaches the sink; every partition built is closed.
``AbortExecution`` is left out (it closes nothing by design).
"""

from __future__ import annotations

import asyncio
import faulthandler
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.window import EventClockConfig, TumblingWindow

T0 = datetime(2024, 1, 1, tzinfo=UTC)
WATCHDOG = 5.0  # seconds per run; a healthy run takes milliseconds
OP_ID = "under_test"

# -- random objects ------------------------------------------------------------

#: While set, `BadRepr` objects refuse to be shown (off while hypothesis prints).
ARMED = False


class ReprError(Exception):
    pass


class BadRepr:
    """An item whose ``repr`` raises (while a run is going on)."""

    def __repr__(self) -> str:
        if ARMED:
            raise ReprError("no repr for you")
        return "BadRepr()"


class StrKey(str):
    """A str subclass key: accepted as its plain str value."""

    __slots__ = ()


class _Fail:
    def __repr__(self) -> str:
        return "FAIL"


#: The item (or value of a pair) on which the operator's user code raises.
FAIL: Any = _Fail()


class CustomError(Exception):
    pass


class CustomBase(BaseException):
    pass


EXCEPTIONS: list[type[BaseException]] = [
    ValueError,
    CustomError,
    CustomBase,
    GeneratorExit,
    KeyboardInterrupt,
    SystemExit,
    StopIteration,
    StopAsyncIteration,
    asyncio.CancelledError,
]
#: Reported as a RuntimeError caused by them.
WRAPPED = (StopIteration, StopAsyncIteration, asyncio.CancelledError)

scalars = st.one_of(st.integers(-5, 300), st.text(max_size=3), st.none(), st.builds(BadRepr))
objects = st.one_of(scalars, st.tuples(), st.tuples(scalars), st.tuples(scalars, scalars, scalars))
str_keys = st.sampled_from(["a", "b", "c", "ü"]) | st.sampled_from(["a", "b"]).map(StrKey)
pairs = st.tuples(str_keys, objects)
bad_pairs = st.tuples(st.one_of(st.integers(0, 3), st.none(), st.just(b"a")), objects)

STATELESS = [
    "map",
    "filter",
    "filter_map",
    "flat_map",
    "inspect",
    "inspect_epoch",
    "inspect_worker",
]
KEYED = ["stateful_map", "reduce", "batch", "fold_window", "reduce_window", "collect_window"]
MODES = ["sync", "async", "sync_coro", "sync_coro_eager"]


# -- tracked source and sink -----------------------------------------------------


class _Part(StatefulSourcePartition[Any, int]):
    def __init__(self, owner: Source) -> None:
        self.owner = owner
        self.pos = 0

    def _next(self) -> list[Any]:
        o = self.owner
        if o.calls == o.fail_at:
            o.calls += 1
            assert o.exc is not None
            raise o.exc
        o.calls += 1
        batch = o.items[self.pos : self.pos + o.batch_size]
        if not batch:
            raise StopAsyncIteration if o.is_async else StopIteration
        self.pos += len(batch)
        return batch

    def next_batch(self, sched: datetime | None) -> Any:
        return self._next()

    def snapshot(self) -> int:
        return self.pos

    def close(self) -> None:
        self.owner.closed += 1


class _AsyncPart(_Part):
    async def next_batch(self, sched: datetime | None) -> Any:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()
        return self._next()

    async def close(self) -> None:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()
        self.owner.closed += 1


@dataclass
class Source(FixedPartitionedSource[Any, int]):
    items: list[Any]
    batch_size: int
    is_async: bool
    fail_at: int | None = None  # the call of next_batch that raises
    exc: BaseException | None = None
    calls: int = 0
    built: int = 0
    closed: int = 0

    def list_parts(self) -> list[str]:
        return ["only"]

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> _Part:
        self.built += 1
        return _AsyncPart(self) if self.is_async else _Part(self)


class _SinkPart(StatelessSinkPartition[Any]):
    def __init__(self, owner: Sink) -> None:
        self.owner = owner

    def _write(self, items: list[Any]) -> None:
        o = self.owner
        o.calls += 1
        if o.calls - 1 == o.fail_at:
            assert o.exc is not None
            raise o.exc
        o.out.extend(items)

    def write_batch(self, items: list[Any]) -> None:
        self._write(items)

    def close(self) -> None:
        self.owner.closed += 1


class _AsyncSinkPart(_SinkPart):
    async def write_batch(self, items: list[Any]) -> None:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()
        self._write(items)

    async def close(self) -> None:  # type: ignore[override]
        await anyio.lowlevel.checkpoint()
        self.owner.closed += 1


@dataclass
class Sink(DynamicSink[Any]):
    is_async: bool
    fail_at: int | None = None  # the call of write_batch that raises
    exc: BaseException | None = None
    out: list[Any] = field(default_factory=list)
    calls: int = 0
    built: int = 0
    closed: int = 0

    def build(self, worker_index: int, worker_count: int) -> _SinkPart:
        self.built += 1
        return _AsyncSinkPart(self) if self.is_async else _SinkPart(self)


# -- user functions ----------------------------------------------------------------


def user_fn(body: Callable[..., Any], mode: str, exc: BaseException) -> Callable[..., Any]:
    """``body(*args)`` as user code of ``mode`` that raises ``exc`` where ``body`` says.

    ``body`` returns the result, or raises `_Raise` to make the user code
    raise ``exc`` (in the function itself, or in the coroutine it returns).
    """

    def compute(*args: Any) -> Any:
        try:
            return False, body(*args)
        except _Raise:
            return True, None

    if mode == "sync":

        def sync(*args: Any) -> Any:
            failed, result = compute(*args)
            if failed:
                raise exc
            return result

        return sync

    async def coro(*args: Any) -> Any:
        await anyio.lowlevel.checkpoint()
        failed, result = compute(*args)
        if failed:
            raise exc
        return result

    if mode == "async":
        return coro
    if mode == "sync_coro":
        return lambda *args: coro(*args)

    def eager(*args: Any) -> Any:  # sync_coro_eager: raises before making a coroutine
        if compute(*args)[0]:
            raise exc
        return coro(*args)

    return eager


class _Raise(Exception):
    pass


def fails_on(value: Any) -> None:
    if value is FAIL:
        raise _Raise


class Acc(list[Any]):
    """A reduce accumulator (random values are never one)."""


def reducer(acc: Any, value: Any) -> Acc:
    fails_on(value)
    if not isinstance(acc, Acc):
        acc = Acc([acc])
    return Acc([*acc, value])


def reduce_done(acc: Any) -> bool:
    fails_on(acc)
    return isinstance(acc, Acc) and len(acc) >= 3


# -- the model -----------------------------------------------------------------------


def as_pair(item: Any) -> tuple[str, Any] | None:
    if isinstance(item, tuple) and tuple.__len__(item) == 2 and isinstance(item[0], str):
        return (str.__str__(item[0]), item[1])
    return None


@dataclass
class Expected:
    emitted: list[Any]  # output of the items processed (before a failure)
    flushed: list[Any]  # output added at the end of input
    fail_index: int | None  # index of the item the operator fails on
    role: str | None  # the role in the note; "type" for a non-pair item


def model(op: str, items: list[Any], max_size: int) -> Expected:
    out: list[Any] = []
    state: dict[str, Any] = {}
    for i, item in enumerate(items):
        if op in STATELESS:
            if item is FAIL:
                return Expected(out, [], i, ROLES[op])
            if op == "map":
                out.append(("m", item))
            elif op == "filter":
                if keep(item):
                    out.append(item)
            elif op == "filter_map":
                if keep(item):
                    out.append(("fm", item))
            elif op == "flat_map":
                out.extend(spread(item))
            else:
                out.append(item)
            continue
        pair = as_pair(item)
        if pair is None:
            return Expected(out, [], i, "type")
        key, value = pair
        if op == "stateful_map":
            if value is FAIL:
                return Expected(out, [], i, ROLES[op])
            n = state.get(key, 0)
            state[key] = n + 1
            out.append((key, (n, value)))
        elif op == "reduce":
            if value is FAIL:
                role = "reduce reducer" if key in state else "reduce is_complete"
                return Expected(out, [], i, role)
            acc = reducer(state[key], value) if key in state else value
            if reduce_done(acc):
                del state[key]
                out.append((key, acc))
            else:
                state[key] = acc
        elif op == "batch":
            state.setdefault(key, []).append(value)
            if len(state[key]) >= max_size:
                out.append((key, state.pop(key)))
        elif op == "fold_window":
            if value is FAIL:
                return Expected(out, [], i, ROLES[op])
            state.setdefault(key, []).append(value)
        elif op == "reduce_window":
            if key in state:
                if value is FAIL:
                    return Expected(out, [], i, ROLES[op])
                state[key] = reducer(state[key], value)
            else:
                state[key] = value  # the first value starts the window: no call
        elif op == "collect_window":
            if value is FAIL:
                return Expected(out, [], i, "collect_window dt_getter")
            state.setdefault(key, []).append(value)
    if op in ("reduce", "stateful_map") or op in STATELESS:
        flushed: list[Any] = []
    else:
        flushed = [(k, v) for k, v in state.items()]
    return Expected(out, flushed, None, None)


def keep(x: Any) -> bool:
    return not isinstance(x, int) or x % 2 == 0


def spread(x: Any) -> list[Any]:
    return [x, x] if isinstance(x, str) else [x]


ROLES = {
    "map": "map mapper",
    "filter": "filter predicate",
    "filter_map": "filter_map mapper",
    "flat_map": "flat_map mapper",
    "inspect": "inspect inspector",
    "inspect_epoch": "inspect_epoch inspector",
    "inspect_worker": "inspect_worker inspector",
    "stateful_map": "stateful_map mapper",
    "reduce": "reduce reducer",
    "fold_window": "fold_window folder",
    "reduce_window": "reduce_window reducer",
    "collect_window": "collect_window dt_getter",
}


# -- building the flow -------------------------------------------------------------------


def add_op(flow: Dataflow, op: str, mode: str, exc: BaseException, max_size: int) -> None:
    def f(body: Callable[..., Any]) -> Callable[..., Any]:
        return user_fn(body, mode, exc)

    def checked(x: Any) -> Any:
        fails_on(x)
        return x

    clock = EventClockConfig(dt_getter=lambda v: T0)
    window = TumblingWindow(length=timedelta(hours=1), align_to=T0)
    if op == "map":
        flow.map(OP_ID, f(lambda x: ("m", checked(x))))
    elif op == "filter":
        flow.filter(OP_ID, f(lambda x: keep(checked(x))))
    elif op == "filter_map":
        flow.filter_map(OP_ID, f(lambda x: ("fm", x) if keep(checked(x)) else None))
    elif op == "flat_map":
        flow.flat_map(OP_ID, f(lambda x: spread(checked(x))))
    elif op == "inspect":
        flow.inspect(f(checked))
    elif op == "inspect_epoch":
        flow.inspect_epoch(f(lambda epoch, x: checked(x)))
    elif op == "inspect_worker":
        flow.inspect_worker(f(lambda x, worker: checked(x)))
    elif op == "stateful_map":
        flow.stateful_map(OP_ID, lambda: 0, f(lambda n, v: (n + 1, (n, checked(v)))))
    elif op == "reduce":
        flow.reduce(OP_ID, f(reducer), f(reduce_done))
    elif op == "batch":
        flow.batch(OP_ID, max_size, timedelta(hours=1))
    elif op == "fold_window":
        flow.fold_window(OP_ID, clock, window, list, f(lambda acc, v: [*acc, checked(v)]))
    elif op == "reduce_window":
        flow.reduce_window(OP_ID, clock, window, f(reducer))
    elif op == "collect_window":
        # The dt_getter is the user code that fails (it is sync by contract).
        def getter(v: Any) -> datetime:
            if v is FAIL:
                raise exc
            return T0

        flow.collect_window(OP_ID, EventClockConfig(dt_getter=getter), window)
    else:  # pragma: no cover
        raise AssertionError(op)


def step_id_of(flow: Dataflow) -> str:
    return flow.steps[1].step_id


def strip_windows(op: str, out: list[Any]) -> list[Any]:
    if op not in ("fold_window", "reduce_window", "collect_window"):
        return out
    stripped = []
    for key, (meta, acc) in out:
        assert meta.open_time == T0, meta
        stripped.append((key, acc))
    return stripped


# -- checks ---------------------------------------------------------------------------------


def is_sub_multiset(small: list[Any], big: list[Any]) -> bool:
    rest = list(big)
    for x in small:
        for j, y in enumerate(rest):
            if same(x, y):
                del rest[j]
                break
        else:
            return False
    return True


def same(x: Any, y: Any) -> bool:
    if x is y:
        return True
    if type(x) is not type(y):
        return False
    if isinstance(x, tuple | list):
        return len(x) == len(y) and all(same(a, b) for a, b in zip(x, y, strict=True))
    try:
        return bool(x == y)
    except Exception:
        return False


def same_list(x: list[Any], y: list[Any]) -> bool:
    return same(list(x), list(y))


def check_error(err: BaseException | None, exc: BaseException, step_id: str, role: str) -> None:
    assert err is not None, f"the run ended without raising {exc!r}"
    assert not isinstance(err, BaseExceptionGroup), f"an ExceptionGroup: {err!r}"
    if isinstance(exc, WRAPPED):
        assert type(err) is RuntimeError, f"expected a RuntimeError for {exc!r}, got {err!r}"
        causes = []
        c: BaseException | None = err
        while c is not None:
            causes.append(c)
            c = c.__cause__
        # A sync StopIteration ends C-level ``map`` quietly: the stateless
        # fast paths only see that an item was skipped, and say so.
        lost = isinstance(exc, StopIteration) and "raised StopIteration on item" in str(err)
        assert lost or any(c is exc for c in causes), (
            f"the RuntimeError {err!r} is not caused by the user's {exc!r}"
        )
    else:
        assert err is exc, f"expected the user's {exc!r} itself, got {type(err)}: {err!r}"
    notes = getattr(err, "__notes__", [])
    assert f"raised in step {step_id!r} by the {role}" in notes, (
        f"no note for step {step_id!r} / role {role!r}: {notes}"
    )


# -- the fuzz test ---------------------------------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(STATELESS + KEYED))
    site = draw(st.sampled_from(["op", "op", "op", "input", "output", "none"]))
    if op in KEYED:
        item = pairs if site != "op" else st.one_of(pairs, pairs, pairs, objects, bad_pairs)
    else:
        item = st.one_of(objects, pairs, bad_pairs)
    items = draw(st.lists(item, max_size=12))
    if site == "op" and op != "batch":
        pos = draw(st.integers(0, len(items)))
        if op in KEYED:
            items.insert(pos, (draw(str_keys), FAIL))
        else:
            items.insert(pos, FAIL)
    return {
        "op": op,
        "site": site,
        "items": items,
        # A keyed step's sync function that returns an awaitable is refused
        # with a clear error (its state chains a key's calls): see
        # test_a_keyed_sync_function_returning_an_awaitable_is_refused.
        "mode": draw(st.sampled_from(MODES if op in STATELESS else ["sync", "async"])),
        "exc_type": draw(st.sampled_from(EXCEPTIONS)),
        "batch_size": draw(st.integers(1, 5)),
        "workers": draw(st.integers(1, 2)),
        "max_size": draw(st.integers(1, 3)),
        "io_async": draw(st.booleans()),
        "io_fail_at": draw(st.integers(0, 4)),
    }


def run_flow(flow: Dataflow, workers: int) -> BaseException | None:
    global ARMED

    async def main() -> None:
        with anyio.fail_after(WATCHDOG):
            await aiowax.run(flow, workers=workers)

    ARMED = True
    try:
        asyncio.run(main())
    except BaseException as error:
        return error
    finally:
        ARMED = False
    return None


@pytest.mark.timeout(120)
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
@given(scenarios())
def test_fuzz_user_code(s: dict[str, Any]) -> None:
    op, site, items, workers = s["op"], s["site"], s["items"], s["workers"]
    if site == "input" and s["exc_type"] in (StopIteration, StopAsyncIteration):
        # From next_batch these are the documented end of the partition.
        s["exc_type"] = ValueError
    exc = s["exc_type"]("boom")
    source = Source(items, s["batch_size"], s["io_async"])
    sink = Sink(s["io_async"])
    if site == "input":
        source.fail_at, source.exc = s["io_fail_at"], exc
    elif site == "output":
        sink.fail_at, sink.exc = s["io_fail_at"], exc
    flow = Dataflow()
    flow.input("inp", source)
    add_op(flow, op, s["mode"], exc, s["max_size"])
    flow.output("out", sink)
    step_id = step_id_of(flow)

    faulthandler.dump_traceback_later(60, exit=True)  # a hang the watchdog cannot end
    try:
        err = run_flow(flow, workers)
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert not isinstance(err, TimeoutError), f"the run hung: {err!r}"

    # Every partition built is closed (the source one is built on one worker).
    assert source.built == 1, source.built
    assert source.closed == source.built, (source.built, source.closed)
    assert sink.built == workers, sink.built
    assert sink.closed == sink.built, (sink.built, sink.closed)

    got = strip_windows(op, sink.out)
    # Stateless steps keep the order (one source partition, local links);
    # keyed steps route by key, so only the multiset is compared.
    ordered = op in STATELESS

    def agrees(expected: list[Any], exact: bool) -> bool:
        if exact:
            return (
                same_list(got, expected)
                if ordered
                else (len(got) == len(expected) and is_sub_multiset(expected, got))
            )
        return is_sub_multiset(expected, got)

    if site == "input":
        delivered = items[: source.fail_at * source.batch_size] if source.fail_at else []
        nbatches = -(-len(items) // source.batch_size)
        if source.fail_at is not None and source.fail_at > nbatches:
            # The source ended before the failing call.
            assert err is None, f"unexpected {err!r}"
            exp = model(op, items, s["max_size"])
            assert agrees(exp.emitted + exp.flushed, exact=True), (got, exp)
            return
        check_error(err, exc, "inp", "input next_batch")
        exp = model(op, delivered, s["max_size"])
        assert exp.fail_index is None
        assert agrees(exp.emitted, exact=workers == 1 or ordered), (got, exp.emitted)
        return

    exp = model(op, items, s["max_size"])
    if site == "output":
        full = exp.emitted + exp.flushed
        if err is None:
            assert sink.calls <= sink.fail_at, "write_batch failed but the run did not raise"
            assert agrees(full, exact=True), (got, full)
        else:
            check_error(err, exc, "out", "output write_batch")
            if ordered:
                assert same_list(got, full[: len(got)]), (got, full)
            else:
                assert is_sub_multiset(got, full), (got, full)
        return

    if exp.fail_index is None:
        assert err is None, f"unexpected {type(err)}: {err!r} {getattr(err, '__notes__', '')}"
        assert agrees(exp.emitted + exp.flushed, exact=True), (got, exp)
        return
    later_bad = any(as_pair(x) is None for x in items[exp.fail_index + 1 :])
    if (
        workers > 1
        and op in KEYED
        and later_bad
        and isinstance(err, TypeError)
        and exp.role != "type"
    ):
        # The router on the source's worker may meet a later non-pair item
        # before the other worker's step fails on the earlier one: a race
        # between workers, not a wrong error. What reached the sink is then
        # only bounded by what the items before that later one produce.
        text = str(err)
        assert repr(step_id) in text, f"the TypeError does not name the step: {text}"
        return
    if exp.role == "type":
        assert isinstance(err, TypeError), f"expected a TypeError, got {type(err)}: {err!r}"
        text = str(err) + " ".join(getattr(err, "__notes__", []))
        assert repr(step_id) in text, f"the TypeError does not name the step: {text}"
    else:
        assert exp.role is not None
        check_error(err, exc, step_id, exp.role)
    # The output of the items before the failing one reached the sink; with
    # one worker nothing after it.
    assert agrees(exp.emitted, exact=workers == 1 or ordered), (got, exp.emitted)


# batch calls no user function, and collect_window's (dt_getter) is sync by contract.
@pytest.mark.parametrize("op", [op for op in KEYED if op not in ("batch", "collect_window")])
def test_a_keyed_sync_function_returning_an_awaitable_is_refused(op: str) -> None:
    # W2 for keyed steps: not awaited (the state would chain coroutines), but
    # a TypeError naming the step and the function, and no coroutine left
    # unawaited (warnings are errors in this suite).
    source = Source([("a", 0), ("a", 1), ("a", 3), ("a", 4), ("b", 2)], 5, False)
    sink = Sink(False)
    flow = Dataflow()
    flow.input("inp", source)
    add_op(flow, op, "sync_coro", ValueError("unused"), 2)
    flow.output("out", sink)
    err = run_flow(flow, 1)
    assert isinstance(err, TypeError), repr(err)
    assert "returned an awaitable" in str(err)
    assert repr(step_id_of(flow)) in str(err)
    assert source.closed == source.built == 1
    assert sink.closed == sink.built == 1
