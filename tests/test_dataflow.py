"""The flow definition: `Dataflow`, the window configurations, definition errors.

Defining a flow only records validated, plain data; nothing runs until
``run_main`` / ``await aiowax.run``. Mistakes in a definition are reported at
the call that made them, naming the argument and the step.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import pickle
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSink, TestingSource, cluster_main, run_main
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

#: The reference's examples, one section per method, headed by its parameters.
REFERENCE_EXAMPLES = Path(__file__).resolve().parent / "data" / "dataflow_examples.txt"

ALIGN = datetime(2022, 1, 1, tzinfo=UTC)

#: The reference's 16 methods and their arguments after ``self, /``, in order.
SEED_SIGNATURES: dict[str, tuple[str, ...]] = {
    "batch": ("step_id", "max_size", "timeout"),
    "collect_window": ("step_id", "clock_config", "window_config"),
    "filter": ("step_id", "predicate"),
    "filter_map": ("step_id", "mapper"),
    "flat_map": ("step_id", "mapper"),
    "fold_window": ("step_id", "clock_config", "window_config", "builder", "folder"),
    "input": ("step_id", "source"),
    "inspect": ("inspector",),
    "inspect_epoch": ("inspector",),
    "inspect_worker": ("inspector",),
    "map": ("step_id", "mapper"),
    "output": ("step_id", "sink"),
    "redistribute": (),
    "reduce": ("step_id", "reducer", "is_complete"),
    "reduce_window": ("step_id", "clock_config", "window_config", "reducer"),
    "stateful_map": ("step_id", "builder", "mapper"),
}

WITH_STEP_ID = sorted(
    name for name, params in SEED_SIGNATURES.items() if params[:1] == ("step_id",)
)
WITHOUT_STEP_ID = sorted(set(SEED_SIGNATURES) - set(WITH_STEP_ID))

#: Operators whose engine part has not landed yet.


def identity(x: Any) -> Any:
    return x


def clock() -> EventClockConfig:
    return EventClockConfig(lambda v: v, wait_for_system_duration=timedelta(0))


def window() -> TumblingWindow:
    return TumblingWindow(length=timedelta(seconds=10), align_to=ALIGN)


def valid_args(method: str, step_id: str = "the_step") -> tuple[Any, ...]:
    """Arguments that `method` accepts, in the reference's order."""
    rest: dict[str, tuple[Any, ...]] = {
        "batch": (10, timedelta(seconds=1)),
        "collect_window": (clock(), window()),
        "filter": (identity,),
        "filter_map": (identity,),
        "flat_map": (identity,),
        "fold_window": (clock(), window(), list, identity),
        "input": (TestingSource([]),),
        "inspect": (identity,),
        "inspect_epoch": (identity,),
        "inspect_worker": (identity,),
        "map": (identity,),
        "output": (TestingSink([]),),
        "redistribute": (),
        "reduce": (identity, identity),
        "reduce_window": (clock(), window(), identity),
        "stateful_map": (list, identity),
    }
    if method in WITH_STEP_ID:
        return (step_id, *rest[method])
    return rest[method]


class RecordingSource(FixedPartitionedSource[Any, int]):
    """A source that remembers whether the runtime ever touched it."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def list_parts(self) -> list[str]:
        self.calls.append("list_parts")
        return ["only"]

    def build_part(
        self, now: datetime, for_part: str, resume_state: int | None
    ) -> StatefulSourcePartition[Any, int]:
        self.calls.append("build_part")
        raise AssertionError("the source should not be built")


class RecordingSink(DynamicSink[Any]):
    """A sink that remembers whether the runtime ever touched it."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def build(self, worker_index: int, worker_count: int) -> StatelessSinkPartition[Any]:
        self.calls.append("build")
        raise AssertionError("the sink should not be built")


def add_every_step(flow: Dataflow, fn: Callable[..., Any], calls: list[str]) -> None:
    """Add one step of each of the 16 operators to ``flow``."""
    flow.input("inp", RecordingSource(calls))
    flow.map("map", fn)
    flow.filter("filter", fn)
    flow.filter_map("filter_map", fn)
    flow.flat_map("flat_map", fn)
    flow.inspect(fn)
    flow.inspect_epoch(fn)
    flow.inspect_worker(fn)
    flow.redistribute()
    flow.stateful_map("stateful_map", fn, fn)
    flow.reduce("reduce", fn, fn)
    flow.batch("batch", 10, timedelta(seconds=1))
    flow.fold_window("fold_window", EventClockConfig(fn, timedelta(0)), window(), fn, fn)
    flow.reduce_window("reduce_window", SystemClockConfig(), window(), fn)
    flow.collect_window("collect_window", SystemClockConfig(), SessionWindow(timedelta(1)))
    flow.output("out", RecordingSink(calls))


# -- the methods and their signatures ---------------------------------------


@pytest.mark.parametrize("method", sorted(SEED_SIGNATURES))
def test_method_has_the_reference_argument_names_and_order(method: str) -> None:
    sig = inspect.signature(getattr(Dataflow, method))
    params = list(sig.parameters.values())
    assert params[0].name == "self"
    assert params[0].kind is inspect.Parameter.POSITIONAL_ONLY
    reference = [p for p in params[1:] if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    assert tuple(p.name for p in reference) == SEED_SIGNATURES[method]
    for p in reference:
        # After the "/", every argument can be passed by position or by name,
        # and none is optional.
        assert p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, p
        assert p.default is inspect.Parameter.empty, p
    # Ours on top of the reference: keyword-only, optional (so every call
    # written for the reference means the same).
    extra = [p for p in params[1:] if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert [p.name for p in extra] in ([], ["max_concurrency"], ["max_concurrency", "processes"])
    assert all(p.default is None for p in extra), extra


def test_signature_table_matches_the_reference_examples_file() -> None:
    # tests/test_spec_examples.py checks that file against the reference text
    # where that text is at hand.
    headers = re.findall(
        r"^## (\w+)\(([\w, ]*)\)$",
        REFERENCE_EXAMPLES.read_text(encoding="utf-8"),
        re.MULTILINE,
    )
    from_file = {name: tuple(p for p in params.split(", ") if p) for name, params in headers}
    assert from_file == SEED_SIGNATURES


@pytest.mark.parametrize("method", sorted(SEED_SIGNATURES))
def test_method_returns_none_and_adds_one_step(method: str) -> None:
    flow = Dataflow()
    assert getattr(flow, method)(*valid_args(method)) is None
    assert len(flow.steps) == 1
    assert flow.steps[0].kind == method


@pytest.mark.parametrize("method", sorted(SEED_SIGNATURES))
def test_method_accepts_its_arguments_by_name(method: str) -> None:
    flow = Dataflow()
    kwargs = dict(zip(SEED_SIGNATURES[method], valid_args(method), strict=True))
    assert getattr(flow, method)(**kwargs) is None
    assert len(flow.steps) == 1


@pytest.mark.parametrize("method", WITH_STEP_ID)
def test_step_records_the_user_step_id_and_arguments(method: str) -> None:
    flow = Dataflow()
    args = valid_args(method, step_id="mine")
    getattr(flow, method)(*args)
    (step,) = flow.steps
    assert step.kind == method
    assert step.step_id == "mine"
    assert step.index == 0
    for name, value in zip(SEED_SIGNATURES[method][1:], args[1:], strict=True):
        assert getattr(step, name) is value


@pytest.mark.parametrize("method", WITHOUT_STEP_ID)
def test_operator_without_step_id_gets_a_generated_one(method: str) -> None:
    flow = Dataflow()
    getattr(flow, method)(*valid_args(method))
    getattr(flow, method)(*valid_args(method))
    first, second = flow.steps
    assert isinstance(first.step_id, str)
    assert first.step_id
    assert first.step_id != second.step_id
    assert method in first.step_id


# -- argument checks ---------------------------------------------------------


def _clock_and_window_cases() -> list[Any]:
    cases = []
    for method in ("fold_window", "reduce_window", "collect_window"):
        extra = {"fold_window": (list, identity), "reduce_window": (identity,)}.get(method, ())
        for bad in (window(), None, "system"):
            cases.append(
                pytest.param(
                    method,
                    ("the_step", bad, window(), *extra),
                    TypeError,
                    "clock_config",
                    id=f"{method}-clock_config-{type(bad).__name__}",
                )
            )
        for bad in (SystemClockConfig(), None, timedelta(seconds=10)):
            cases.append(
                pytest.param(
                    method,
                    ("the_step", clock(), bad, *extra),
                    TypeError,
                    "window_config",
                    id=f"{method}-window_config-{type(bad).__name__}",
                )
            )
    return cases


NOT_CALLABLE = 3

BAD_ARGUMENTS = [
    pytest.param("map", ("the_step", NOT_CALLABLE), TypeError, "mapper", id="map-mapper"),
    pytest.param(
        "filter", ("the_step", NOT_CALLABLE), TypeError, "predicate", id="filter-predicate"
    ),
    pytest.param(
        "filter_map", ("the_step", NOT_CALLABLE), TypeError, "mapper", id="filter_map-mapper"
    ),
    pytest.param(
        "flat_map", ("the_step", "not callable"), TypeError, "mapper", id="flat_map-mapper"
    ),
    pytest.param(
        "stateful_map",
        ("the_step", NOT_CALLABLE, identity),
        TypeError,
        "builder",
        id="stateful_map-builder",
    ),
    pytest.param(
        "stateful_map",
        ("the_step", list, NOT_CALLABLE),
        TypeError,
        "mapper",
        id="stateful_map-mapper",
    ),
    pytest.param(
        "reduce", ("the_step", NOT_CALLABLE, identity), TypeError, "reducer", id="reduce-reducer"
    ),
    pytest.param(
        "reduce",
        ("the_step", identity, NOT_CALLABLE),
        TypeError,
        "is_complete",
        id="reduce-is_complete",
    ),
    pytest.param(
        "fold_window",
        ("the_step", clock(), window(), NOT_CALLABLE, identity),
        TypeError,
        "builder",
        id="fold_window-builder",
    ),
    pytest.param(
        "fold_window",
        ("the_step", clock(), window(), list, NOT_CALLABLE),
        TypeError,
        "folder",
        id="fold_window-folder",
    ),
    pytest.param(
        "reduce_window",
        ("the_step", clock(), window(), NOT_CALLABLE),
        TypeError,
        "reducer",
        id="reduce_window-reducer",
    ),
    pytest.param("input", ("the_step", [1, 2]), TypeError, "source", id="input-source-list"),
    pytest.param(
        "input", ("the_step", TestingSink([])), TypeError, "source", id="input-source-is-a-sink"
    ),
    pytest.param("output", ("the_step", []), TypeError, "sink", id="output-sink-list"),
    pytest.param(
        "output",
        ("the_step", TestingSource([])),
        TypeError,
        "sink",
        id="output-sink-is-a-source",
    ),
    pytest.param(
        "batch", ("the_step", "10", timedelta(1)), TypeError, "max_size", id="batch-max_size-str"
    ),
    pytest.param(
        "batch", ("the_step", 10.0, timedelta(1)), TypeError, "max_size", id="batch-max_size-float"
    ),
    pytest.param(
        "batch", ("the_step", True, timedelta(1)), TypeError, "max_size", id="batch-max_size-bool"
    ),
    pytest.param(
        "batch", ("the_step", None, timedelta(1)), TypeError, "max_size", id="batch-max_size-none"
    ),
    pytest.param(
        "batch", ("the_step", 0, timedelta(1)), ValueError, "max_size", id="batch-max_size-zero"
    ),
    pytest.param(
        "batch",
        ("the_step", -1, timedelta(1)),
        ValueError,
        "max_size",
        id="batch-max_size-negative",
    ),
    pytest.param(
        "batch",
        ("the_step", 10, timedelta(microseconds=-1)),
        ValueError,
        "timeout",
        id="batch-timeout-negative",
    ),
    pytest.param("batch", ("the_step", 10, 5), TypeError, "timeout", id="batch-timeout-int"),
    pytest.param("batch", ("the_step", 10, 5.0), TypeError, "timeout", id="batch-timeout-float"),
    pytest.param("batch", ("the_step", 10, None), TypeError, "timeout", id="batch-timeout-none"),
    *_clock_and_window_cases(),
]


@pytest.mark.parametrize(("method", "args", "error", "argument"), BAD_ARGUMENTS)
def test_bad_argument_is_rejected_naming_the_argument_and_the_step(
    method: str, args: tuple[Any, ...], error: type[Exception], argument: str
) -> None:
    flow = Dataflow()
    with pytest.raises(error) as raised:
        getattr(flow, method)(*args)
    assert type(raised.value) is error
    message = str(raised.value)
    assert argument in message
    assert "the_step" in message
    assert method in message
    # A rejected call leaves no trace: no step, and its id stays free.
    assert flow.steps == ()
    getattr(flow, method)(*valid_args(method))
    assert [s.step_id for s in flow.steps] == ["the_step"]


@pytest.mark.parametrize("method", ["inspect", "inspect_epoch", "inspect_worker"])
def test_non_callable_inspector_is_rejected_naming_the_argument_and_the_operator(
    method: str,
) -> None:
    flow = Dataflow()
    with pytest.raises(TypeError) as raised:
        getattr(flow, method)(NOT_CALLABLE)
    message = str(raised.value)
    assert "inspector" in message
    assert method in message
    assert repr(NOT_CALLABLE) in message
    assert flow.steps == ()


def test_batch_accepts_a_zero_timeout() -> None:
    flow = Dataflow()
    flow.batch("b", 1, timedelta(0))
    assert flow.steps[0].timeout == timedelta(0)  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", WITH_STEP_ID)
@pytest.mark.parametrize(
    "bad_id",
    [
        pytest.param(1, id="int"),
        pytest.param(b"bytes", id="bytes"),
        pytest.param(("a",), id="tuple"),
        pytest.param(None, id="none"),
    ],
)
def test_non_str_step_id_is_a_type_error(method: str, bad_id: object) -> None:
    flow = Dataflow()
    with pytest.raises(TypeError, match="step_id") as raised:
        getattr(flow, method)(*valid_args(method, step_id=bad_id))  # type: ignore[arg-type]
    assert method in str(raised.value)
    assert flow.steps == ()


# -- a step id left out, or given where none is taken ------------------------


def double(x: int) -> int:
    return x * 2


#: The operators Bytewax 0.17.2 called without a step id (``flow.map(fn)``);
#: aiowax accepts that form with a DeprecationWarning (tests/compat/).
NO_ID_IN_0172 = ("filter", "filter_map", "flat_map", "map")


@pytest.mark.parametrize("method", sorted(set(WITH_STEP_ID) - set(NO_ID_IN_0172)))
def test_a_call_without_its_step_id_asks_for_one(method: str) -> None:
    # Python's own error would blame the last argument ("missing ...
    # 'reducer'"), which was given.
    flow = Dataflow()
    with pytest.raises(TypeError) as raised:
        getattr(flow, method)(*valid_args(method)[1:])
    message = str(raised.value)
    assert f"{method} needs a step id" in message
    assert f'flow.{method}("' in message
    assert "missing" not in message
    assert flow.steps == ()


def test_map_without_a_step_id_shows_the_call_with_one() -> None:
    # Bytewax 0.17.2's form: accepted, with a warning showing the new one.
    flow = Dataflow()
    with pytest.warns(DeprecationWarning, match=re.escape('flow.map("double", double)')):
        flow.map(double)  # type: ignore[call-arg]
    flow.map("double", double)
    assert [s.step_id for s in flow.steps] == ["map#0:double", "double"]


def test_a_step_id_left_out_of_keyword_arguments_is_asked_for() -> None:
    flow = Dataflow()
    with pytest.raises(TypeError, match="stateful_map needs a step id"):
        flow.stateful_map(builder=list, mapper=identity)  # type: ignore[call-arg]


def test_a_lone_argument_that_is_no_function_is_named_too() -> None:
    # flow.map(5) said only that the step id was missing (Bytewax 0.17.2:
    # "'int' object is not callable"): both are wrong, and both are said.
    flow = Dataflow()
    with pytest.raises(TypeError, match="map needs a step id") as raised:
        flow.map(5)  # type: ignore[call-arg]
    assert str(raised.value).endswith("; and 5 (as its mapper) is not callable")
    # A source or a sink is no function: nothing more is said of it.
    for method, connector in (("input", TestingSource([1])), ("output", TestingSink([]))):
        with pytest.raises(TypeError, match=f"{method} needs a step id") as raised:
            getattr(flow, method)(connector)
        assert "callable" not in str(raised.value)


@pytest.mark.parametrize("method", ["map", "filter", "filter_map", "flat_map"])
def test_a_function_where_the_step_id_goes_is_named(method: str) -> None:
    flow = Dataflow()
    with pytest.raises(TypeError, match="step_id must be a str") as raised:
        getattr(flow, method)(double, "the_step")
    message = str(raised.value)
    assert "step id comes first" in message
    assert f'flow.{method}("the_step", double)' in message
    assert flow.steps == ()


@pytest.mark.parametrize("method", WITHOUT_STEP_ID)
def test_a_step_id_given_to_an_operator_without_one_is_named(method: str) -> None:
    flow = Dataflow()
    with pytest.raises(TypeError) as raised:
        getattr(flow, method)("the_step", *valid_args(method))
    message = str(raised.value)
    assert f"{method} takes no step id" in message
    assert f"flow.{method}(" in message
    with pytest.raises(TypeError, match=f"{method} takes no step id"):
        kwargs = dict(zip(SEED_SIGNATURES[method], valid_args(method), strict=True))
        getattr(flow, method)(step_id="the_step", **kwargs)
    assert flow.steps == ()


def test_inspect_with_a_step_id_shows_the_call_without() -> None:
    flow = Dataflow()
    with pytest.raises(TypeError) as raised:
        flow.inspect("log", print)  # type: ignore[call-arg]
    assert "flow.inspect(print)" in str(raised.value)


def test_other_wrong_calls_keep_pythons_message() -> None:
    flow = Dataflow()
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'mapper'"):
        flow.map("the_step")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword argument 'mapper'"):
        flow.inspect(mapper=print)  # type: ignore[call-arg]
    assert flow.steps == ()


@pytest.mark.parametrize("method", WITH_STEP_ID)
def test_empty_step_id_is_a_value_error(method: str) -> None:
    flow = Dataflow()
    with pytest.raises(ValueError, match="step_id") as raised:
        getattr(flow, method)(*valid_args(method, step_id=""))
    assert method in str(raised.value)
    assert flow.steps == ()


#: What `os.fsdecode` makes of a file name that is not UTF-8: a lone surrogate.
NOT_UTF8 = b"in-\xff".decode("utf-8", "surrogateescape")


@pytest.mark.parametrize("method", WITH_STEP_ID)
def test_a_step_id_with_a_lone_surrogate_is_a_value_error(method: str) -> None:
    # It used to run, and then every Prometheus scrape of the registry
    # failed (UnicodeEncodeError: the labels are UTF-8). Bytewax 0.17.2
    # refuses it too, at definition, with "TypeError: argument 'step_id':
    # failed to extract field StepId.0"; aiowax says what and where, on
    # purpose.
    flow = Dataflow()
    with pytest.raises(ValueError, match="lone surrogate") as raised:
        getattr(flow, method)(*valid_args(method, step_id=NOT_UTF8))
    assert method in str(raised.value)
    assert repr(NOT_UTF8) in str(raised.value)
    assert flow.steps == ()


def test_a_flow_name_with_a_lone_surrogate_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"Dataflow: name .* at index 3 is a lone surrogate"):
        Dataflow(NOT_UTF8)
    assert Dataflow("in-\u00ff").name == "in-\u00ff"  # any valid text is a name
    # Set later, it is checked the same (helper-66): it goes into the same labels.
    flow = Dataflow("orders")
    with pytest.raises(ValueError, match="lone surrogate"):
        flow.name = NOT_UTF8
    with pytest.raises(TypeError, match="name must be a str"):
        flow.name = 7  # type: ignore[assignment]
    assert flow.name == "orders"
    flow.name = None
    assert flow.name is None


@pytest.mark.parametrize("method", WITH_STEP_ID)
def test_duplicate_step_id_is_a_value_error_naming_the_id(method: str) -> None:
    flow = Dataflow()
    flow.input("dup", TestingSource([]))
    with pytest.raises(ValueError, match="'dup'") as raised:
        getattr(flow, method)(*valid_args(method, step_id="dup"))
    assert "step_id" in str(raised.value)
    assert len(flow.steps) == 1


@pytest.mark.parametrize("method", WITH_STEP_ID)
def test_same_method_twice_with_one_id_is_a_value_error(method: str) -> None:
    flow = Dataflow()
    getattr(flow, method)(*valid_args(method, step_id="twice"))
    with pytest.raises(ValueError, match="'twice'"):
        getattr(flow, method)(*valid_args(method, step_id="twice"))
    assert len(flow.steps) == 1


def test_step_ids_are_per_flow() -> None:
    first, second = Dataflow(), Dataflow()
    first.input("inp", TestingSource([]))
    second.input("inp", TestingSource([]))
    assert first.steps[0].step_id == second.steps[0].step_id == "inp"


def test_step_ids_stay_unique_when_a_user_id_looks_generated() -> None:
    flow = Dataflow()
    flow.input("inp", TestingSource([]))
    flow.map("inspect#2", identity)  # what the next step, at index 2, is called today
    flow.inspect(identity)
    ids = [s.step_id for s in flow.steps]
    assert len(set(ids)) == len(ids), ids


# -- building runs nothing ---------------------------------------------------


def test_building_a_flow_starts_no_loop_no_thread_and_calls_no_user_code() -> None:
    threads_before = set(threading.enumerate())
    calls: list[str] = []

    def user_fn(*args: Any) -> Any:
        calls.append("user function")

    flow = Dataflow()
    add_every_step(flow, user_fn, calls)
    assert len(flow.steps) == 16
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()
    assert set(threading.enumerate()) == threads_before
    assert calls == []


@pytest.mark.asyncio
async def test_building_a_flow_inside_a_running_loop_creates_no_task() -> None:
    tasks_before = asyncio.all_tasks()
    calls: list[str] = []

    def user_fn(*args: Any) -> Any:
        calls.append("user function")

    flow = Dataflow()
    add_every_step(flow, user_fn, calls)
    assert asyncio.all_tasks() == tasks_before
    assert calls == []


# -- a Dataflow is plain data ------------------------------------------------


def test_steps_is_a_tuple_snapshot_in_declaration_order() -> None:
    flow = Dataflow()
    assert flow.steps == ()
    flow.input("inp", TestingSource([]))
    snapshot = flow.steps
    flow.map("m", identity)
    flow.output("out", TestingSink([]))
    assert isinstance(flow.steps, tuple)
    assert len(snapshot) == 1
    assert [s.kind for s in flow.steps] == ["input", "map", "output"]
    assert [s.step_id for s in flow.steps] == ["inp", "m", "out"]
    assert [s.index for s in flow.steps] == [0, 1, 2]


def test_steps_cannot_be_changed_from_outside() -> None:
    flow = Dataflow()
    flow.map("m", identity)
    (step,) = flow.steps
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.step_id = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.mapper = print  # type: ignore[attr-defined]
    assert flow.steps[0].mapper is identity  # type: ignore[attr-defined]


def test_repr_names_the_steps() -> None:
    flow = Dataflow()
    flow.input("numbers", TestingSource([]))
    flow.map("square", identity)
    flow.output("collect", TestingSink([]))
    text = repr(flow)
    assert "Dataflow" in text
    for step_id in ("numbers", "square", "collect"):
        assert step_id in text
    assert "Dataflow" in repr(Dataflow())


# -- window configurations ---------------------------------------------------


@pytest.mark.parametrize("length", [timedelta(0), timedelta(seconds=-1)])
def test_tumbling_window_rejects_a_non_positive_length(length: timedelta) -> None:
    with pytest.raises(ValueError, match="length"):
        TumblingWindow(length=length, align_to=ALIGN)


@pytest.mark.parametrize(
    ("length", "offset", "bad"),
    [
        (timedelta(0), timedelta(seconds=1), "length"),
        (timedelta(seconds=-1), timedelta(seconds=1), "length"),
        (timedelta(seconds=1), timedelta(0), "offset"),
        (timedelta(seconds=1), timedelta(seconds=-1), "offset"),
    ],
)
def test_sliding_window_rejects_a_non_positive_length_or_offset(
    length: timedelta, offset: timedelta, bad: str
) -> None:
    with pytest.raises(ValueError, match=bad):
        SlidingWindow(length=length, offset=offset, align_to=ALIGN)


@pytest.mark.parametrize("gap", [timedelta(0), timedelta(microseconds=-1)])
def test_session_window_rejects_a_non_positive_gap(gap: timedelta) -> None:
    with pytest.raises(ValueError, match="gap"):
        SessionWindow(gap=gap)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda a: TumblingWindow(timedelta(seconds=1), a), id="tumbling"),
        pytest.param(
            lambda a: SlidingWindow(timedelta(seconds=2), timedelta(seconds=1), a), id="sliding"
        ),
    ],
)
def test_windows_reject_a_naive_align_to(make: Callable[[datetime], object]) -> None:
    # TypeError, as in Bytewax 0.17.2 (and as a naive dt_getter result).
    with pytest.raises(TypeError, match="align_to must be timezone-aware"):
        make(datetime(2022, 1, 1))


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda: TumblingWindow(10, ALIGN), id="tumbling-length-int"),
        pytest.param(lambda: TumblingWindow(timedelta(1), "2022-01-01"), id="tumbling-align-str"),
        pytest.param(lambda: SlidingWindow(timedelta(1), 1.0, ALIGN), id="sliding-offset-float"),
        pytest.param(lambda: SessionWindow(5), id="session-gap-int"),
        pytest.param(lambda: EventClockConfig("not callable", timedelta(0)), id="clock-getter"),
        pytest.param(lambda: EventClockConfig(identity, 0), id="clock-wait-int"),
    ],
)
def test_window_configs_reject_wrong_types(make: Callable[[], object]) -> None:
    with pytest.raises(TypeError):
        make()


def test_event_clock_rejects_a_negative_wait() -> None:
    with pytest.raises(ValueError, match="wait_for_system_duration"):
        EventClockConfig(identity, wait_for_system_duration=timedelta(seconds=-1))


def test_an_async_on_late_hook_is_refused_at_once() -> None:
    async def hook(*_: Any) -> None:
        pass

    with pytest.raises(TypeError, match="on_late must be a plain function"):
        EventClockConfig(lambda v: v, timedelta(0), on_late=hook)


def test_window_configs_are_of_the_base_classes() -> None:
    assert isinstance(SystemClockConfig(), ClockConfig)
    assert isinstance(clock(), ClockConfig)
    assert isinstance(window(), WindowConfig)
    assert isinstance(SlidingWindow(timedelta(2), timedelta(1), ALIGN), WindowConfig)
    assert isinstance(SessionWindow(timedelta(1)), WindowConfig)


def test_tumbling_window_is_a_sliding_window_with_offset_equal_to_length() -> None:
    tumbling = TumblingWindow(length=timedelta(seconds=10), align_to=ALIGN)
    assert tumbling.length == tumbling.offset == timedelta(seconds=10)
    assert tumbling.align_to == ALIGN


@pytest.mark.parametrize(
    "config",
    [
        SystemClockConfig(),
        EventClockConfig(identity, timedelta(seconds=3)),
        TumblingWindow(timedelta(seconds=10), ALIGN),
        SlidingWindow(timedelta(seconds=10), timedelta(seconds=5), ALIGN),
        SessionWindow(timedelta(seconds=7)),
    ],
    ids=type,
)
def test_window_configs_pickle_and_compare_equal(config: object) -> None:
    copy = pickle.loads(pickle.dumps(config))
    assert type(copy) is type(config)
    assert copy == config
    assert hash(copy) == hash(config)


def meta(start_s: int, end_s: int) -> WindowMetadata:
    return WindowMetadata(ALIGN + timedelta(seconds=start_s), ALIGN + timedelta(seconds=end_s))


def test_window_metadata_compares_by_value() -> None:
    assert meta(0, 10) == meta(0, 10)
    assert meta(0, 10) != meta(0, 20)
    assert meta(0, 10) != meta(10, 20)
    assert WindowMetadata(open_time=ALIGN, close_time=ALIGN + timedelta(1)) == WindowMetadata(
        ALIGN, ALIGN + timedelta(1)
    )
    assert meta(0, 10).open_time == ALIGN
    assert meta(0, 10).close_time == ALIGN + timedelta(seconds=10)


def test_window_metadata_is_hashable() -> None:
    assert hash(meta(0, 10)) == hash(meta(0, 10))
    assert len({meta(0, 10), meta(0, 10), meta(10, 20)}) == 2
    assert {meta(0, 10): "first"}[meta(0, 10)] == "first"


def test_window_metadata_sorts_by_time() -> None:
    # The reference's fold_window example sorts (key, (WindowMetadata, acc)) pairs.
    assert sorted([meta(10, 20), meta(0, 10), meta(5, 15)]) == [
        meta(0, 10),
        meta(5, 15),
        meta(10, 20),
    ]


def test_window_metadata_pickles() -> None:
    original = meta(0, 10)
    copy = pickle.loads(pickle.dumps(original))
    assert copy == original
    assert type(copy) is WindowMetadata


def test_window_metadata_repr_shows_both_times() -> None:
    text = repr(meta(0, 10))
    assert text.startswith("WindowMetadata(")
    assert repr(ALIGN) in text
    assert repr(ALIGN + timedelta(seconds=10)) in text


# -- definition errors found when the flow runs -----------------------------


def runnable_flow(calls: list[str] | None = None) -> Dataflow:
    flow = Dataflow()
    if calls is None:
        flow.input("inp", TestingSource([1, 2]))
        flow.output("out", TestingSink([]))
    else:
        flow.input("inp", RecordingSource(calls))
        flow.output("out", RecordingSink(calls))
    return flow


def test_flow_without_input_is_a_definition_error() -> None:
    with pytest.raises(aiowax.FlowDefinitionError, match="no input"):
        run_main(Dataflow())


def test_flow_without_output_is_a_definition_error() -> None:
    calls: list[str] = []
    flow = Dataflow()
    flow.input("inp", RecordingSource(calls))
    flow.map("m", identity)
    with pytest.raises(aiowax.FlowDefinitionError, match="no output"):
        run_main(flow)
    assert calls == []


def test_step_before_any_input_is_a_definition_error_naming_the_step() -> None:
    calls: list[str] = []
    flow = Dataflow()
    flow.map("too_early", identity)
    flow.input("inp", RecordingSource(calls))
    flow.output("out", RecordingSink(calls))
    with pytest.raises(aiowax.FlowDefinitionError, match="too_early") as raised:
        run_main(flow)
    assert "input" in str(raised.value)
    assert calls == []


def test_output_before_any_input_is_a_definition_error() -> None:
    flow = Dataflow()
    flow.output("early_out", TestingSink([]))
    with pytest.raises(aiowax.FlowDefinitionError, match="early_out"):
        run_main(flow)


def test_flow_definition_error_is_a_value_error_and_an_aiowax_error() -> None:
    assert issubclass(aiowax.FlowDefinitionError, ValueError)
    assert issubclass(aiowax.FlowDefinitionError, aiowax.AiowaxError)
    with pytest.raises(ValueError):
        run_main(Dataflow())


@pytest.mark.asyncio
async def test_awaiting_run_on_a_flow_without_input_is_a_definition_error() -> None:
    with pytest.raises(aiowax.FlowDefinitionError, match="no input"):
        await aiowax.run(Dataflow())


@pytest.mark.parametrize(
    "interval", [timedelta(seconds=-1), timedelta(microseconds=-1)], ids=["-1s", "-1us"]
)
def test_run_main_rejects_a_negative_epoch_interval(interval: timedelta) -> None:
    calls: list[str] = []
    with pytest.raises(ValueError, match="epoch_interval"):
        run_main(runnable_flow(calls), epoch_interval=interval)
    assert calls == []


@pytest.mark.parametrize("interval", [10, 1.5, "10s"])
def test_run_main_rejects_an_epoch_interval_that_is_not_a_timedelta(interval: object) -> None:
    with pytest.raises(TypeError, match="epoch_interval"):
        run_main(runnable_flow(), epoch_interval=interval)  # type: ignore[arg-type]


def test_run_main_rejects_something_that_is_not_a_flow() -> None:
    with pytest.raises(TypeError, match="Dataflow"):
        run_main([])  # type: ignore[arg-type]


def test_cluster_main_with_addresses_is_refused_and_names_cluster_mode() -> None:
    calls: list[str] = []
    with pytest.raises(NotImplementedError) as info:
        cluster_main(runnable_flow(calls), ["localhost:2101"], 0)
    text = str(info.value)
    # Not "not supported yet": processes share a flow through cluster mode.
    assert "not supported yet" not in text
    assert "worker_count_per_proc" in text
    assert "KafkaCluster" in text and "--kafka-cluster" in text and "scale-out" in text
    assert calls == []


@pytest.mark.asyncio
async def test_run_main_inside_a_running_loop_says_to_await_run() -> None:
    tasks_before = asyncio.all_tasks()
    calls: list[str] = []
    with pytest.raises(RuntimeError, match=re.escape("await aiowax.run")):
        run_main(runnable_flow(calls))
    assert calls == []
    assert asyncio.all_tasks() == tasks_before


@pytest.mark.asyncio
async def test_cluster_main_inside_a_running_loop_says_to_await_run() -> None:
    with pytest.raises(RuntimeError, match=re.escape("await aiowax.run")):
        cluster_main(runnable_flow(), [], 0, worker_count_per_proc=2)
