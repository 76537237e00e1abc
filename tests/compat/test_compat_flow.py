"""`Dataflow` as Bytewax 0.17.2 code calls it, and a 0.17.2 pipeline's semantics.

0.17.2 called ``map``, ``filter``, ``filter_map`` and ``flat_map`` without
a step id, named ``input``'s and ``output``'s second argument ``input`` and
``output``, and let two steps share an id. Each still works, with a
`DeprecationWarning` pointing at the caller's line; the ids aiowax makes up
are the same on every run, so recovery finds its snapshots. A pipeline that
reads a 0.17.2 input class has 0.17.2's window output: ``(key, value)``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aiowax import visualize
from aiowax.dataflow import Dataflow
from aiowax.recovery import RecoveryConfig, init_db_dir
from aiowax.testing import (
    TestingInput,
    TestingOutput,
    TestingSink,
    TestingSource,
    run_main,
)
from aiowax.window import EventClockConfig, TumblingWindow, WindowMetadata


def add_one(x: int) -> int:
    return x + 1


def is_odd(x: int) -> bool:
    return x % 2 == 1


def small_or_none(x: int) -> int | None:
    return x if x < 3 else None


def twice(x: int) -> list[int]:
    return [x, x]


NO_ID = {"map": add_one, "filter": is_odd, "filter_map": small_or_none, "flat_map": twice}
PARAM = {"map": "mapper", "filter": "predicate", "filter_map": "mapper", "flat_map": "mapper"}
RESULT = {
    "map": [1, 2, 3, 4],
    "filter": [1, 3],
    "filter_map": [0, 1, 2],
    "flat_map": [0, 0, 1, 1, 2, 2, 3, 3],
}


@pytest.mark.parametrize("method", sorted(NO_ID))
def test_a_0172_call_without_a_step_id_warns_and_runs(method: str) -> None:
    fn = NO_ID[method]
    flow = Dataflow()
    flow.input("inp", TestingInput(range(4)))
    expected_call = f'flow.{method}("{fn.__name__}", {fn.__name__})'
    with pytest.warns(DeprecationWarning, match=re.escape(expected_call)) as caught:
        getattr(flow, method)(fn)
    # The warning points at the line above, not into aiowax.
    assert caught[0].filename == __file__
    assert flow.steps[1].step_id == f"{method}#1:{fn.__name__}"
    out: list[Any] = []
    flow.output("out", TestingOutput(out))
    run_main(flow)
    assert out == RESULT[method]


@pytest.mark.parametrize("method", sorted(NO_ID))
def test_a_0172_call_by_keyword_without_a_step_id_warns_and_runs(method: str) -> None:
    flow = Dataflow()
    with pytest.warns(DeprecationWarning, match="without a step id"):
        getattr(flow, method)(**{PARAM[method]: NO_ID[method]})
    assert flow.steps[0].step_id == f"{method}#0:{NO_ID[method].__name__}"


def test_a_lambda_without_a_step_id_is_named_by_its_position() -> None:
    flow = Dataflow()
    flow.input("inp", TestingInput([1]))
    with pytest.warns(DeprecationWarning, match=re.escape('flow.map("my_step", mapper)')):
        flow.map(lambda x: x)
    assert flow.steps[1].step_id == "map#1"


def _0172_flow() -> Dataflow:
    flow = Dataflow()
    flow.input("inp", TestingInput([]))
    flow.map(add_one)
    flow.filter(is_odd)
    flow.map(lambda x: x)
    flow.inspect(print)
    flow.flat_map(twice)
    flow.output("out", TestingOutput([]))
    return flow


def test_derived_ids_are_the_same_in_every_fresh_flow() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        first, second = _0172_flow(), _0172_flow()
    ids = [s.step_id for s in first.steps]
    assert ids == [s.step_id for s in second.steps]
    assert ids == [
        "inp",
        "map#1:add_one",
        "filter#2:is_odd",
        "map#3",
        "inspect#4",
        "flat_map#5:twice",
        "out",
    ]


def test_a_derived_id_avoids_an_id_the_user_took() -> None:
    flow = Dataflow()
    flow.input("inp", TestingInput([]))
    flow.map("map#2:add_one", add_one)
    with pytest.warns(DeprecationWarning):
        flow.map(add_one)
    assert flow.steps[2].step_id == "map#2:add_one'"


def test_inspect_takes_no_step_id_in_either_api_and_does_not_warn() -> None:
    # Warnings are errors in this suite: a warning would fail the test.
    flow = Dataflow()
    flow.input("inp", TestingInput([]))
    flow.inspect(print)
    flow.inspect_epoch(print)
    assert [s.step_id for s in flow.steps[1:]] == ["inspect#1", "inspect_epoch#2"]


def test_the_0172_keywords_of_input_and_output_are_renamed() -> None:
    flow = Dataflow()
    with pytest.warns(DeprecationWarning, match="write source=") as caught:
        flow.input("inp", input=TestingInput([1, 2]))
    assert caught[0].filename == __file__
    out: list[Any] = []
    with pytest.warns(DeprecationWarning, match="write sink="):
        flow.output(step_id="out", output=TestingOutput(out))
    run_main(flow)
    assert out == [1, 2]


def test_other_wrong_calls_keep_their_errors() -> None:
    flow = Dataflow()
    with pytest.raises(TypeError, match="step_id must be a str"):
        flow.map(add_one, "the_step")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'mapper'"):
        flow.map("the_step")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="map needs a step id"):
        flow.map(42)  # type: ignore[call-arg]
    assert flow.steps == ()


# -- a step id used twice ----------------------------------------------------


def test_a_repeated_id_in_a_0172_pipeline_gets_a_derived_one_with_a_warning() -> None:
    flow = Dataflow()
    flow.input("inp", TestingInput([("a", 1), ("a", 2)]))
    flow.stateful_map("count", lambda: 0, lambda n, _: (n + 1, n + 1))
    with pytest.warns(DeprecationWarning, match="'count' is already used") as caught:
        flow.stateful_map("count", lambda: 0, lambda n, v: (n + v, n + v))
    assert caught[0].filename == __file__
    assert flow.steps[2].step_id == "stateful_map#2:count"
    out: list[Any] = []
    flow.output("out", TestingOutput(out))
    run_main(flow)
    assert out == [("a", 1), ("a", 3)]


def test_a_repeated_id_is_still_refused_in_a_pipeline_of_the_method_api() -> None:
    flow = Dataflow()
    flow.input("inp", TestingSource([]))
    flow.map("m", add_one)
    with pytest.raises(ValueError, match="'m' is already used"):
        flow.map("m", add_one)


# -- window output -----------------------------------------------------------

ALIGN = datetime(2023, 1, 1, tzinfo=UTC)


def _windowed(source: Any) -> list[Any]:
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", source)
    flow.reduce_window(
        "sum",
        EventClockConfig(lambda v: ALIGN + timedelta(seconds=v), timedelta(0)),
        TumblingWindow(timedelta(seconds=10), ALIGN),
        lambda a, b: a + b,
    )
    flow.output("out", TestingSink(out))
    run_main(flow)
    return out


def test_windows_of_a_0172_pipeline_emit_key_and_value_as_0172_did() -> None:
    assert _windowed(TestingInput([("k", 1), ("k", 2), ("k", 12)])) == [("k", 3), ("k", 12)]


def test_windows_of_a_method_api_pipeline_emit_their_metadata() -> None:
    first = WindowMetadata(ALIGN, ALIGN + timedelta(seconds=10))
    assert _windowed(TestingSource([("k", 1), ("k", 2)])) == [("k", (first, 3))]


def test_the_graph_shows_a_0172_window_step_as_0172s_encoder_did() -> None:
    flow = Dataflow()
    flow.input("inp", TestingInput([]))
    flow.collect_window(
        "w",
        EventClockConfig(lambda v: v, timedelta(0)),
        TumblingWindow(timedelta(seconds=10), ALIGN),
    )
    step = visualize.to_dict(flow)["steps"][1]
    assert set(step) == {"type", "step_id", "clock_config", "window_config"}


# -- recovery across runs of 0.17.2 code ---------------------------------------


def _counting_flow(items: list[Any], out: list[Any]) -> Dataflow:
    flow = Dataflow()
    flow.input("inp", TestingInput(items))
    flow.map(lambda word: (word, 1))
    flow.reduce("total", lambda a, b: a + b, lambda total: total >= 3)
    # The same id again: derived from the position, and state is kept under it.
    flow.map(lambda key_total: (key_total[0], key_total[1]))
    flow.stateful_map("total", lambda: 0, lambda n, t: (n + t, n + t))
    flow.output("out", TestingOutput(out))
    return flow


Build = Callable[[list[Any], list[Any]], Dataflow]


def _run(items: list[Any], db: Path, build: Build) -> list[Any]:
    out: list[Any] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        flow = build(items, out)
    run_main(flow, recovery_config=RecoveryConfig(db), epoch_interval=timedelta(0))
    return out


def test_a_0172_flow_with_derived_ids_resumes_its_state(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 1)
    words = ["a", "a", "b", "a", "b"]
    assert _run(words, tmp_path, _counting_flow) == [("a", 3)]
    # The second run continues the same input: the reduce's totals and the
    # stateful_map's sums (under its derived id) come back from the first.
    more = [*words, "b", "a", "a", "a"]
    assert _run(more, tmp_path, _counting_flow) == [("b", 3), ("a", 6)]


def test_inspect_worker_calls_as_0172_does_in_a_0172_pipeline() -> None:
    # 0.17.2 calls inspector(worker_index, item); the method API (API.md)
    # inspector(item, worker_index). A 0.17.2 pipeline keeps 0.17.2's call,
    # as it keeps 0.17.2's window output (a helper session's parity diff).
    seen: dict[str, list[tuple[Any, Any]]] = {"0.17.2": [], "method": []}
    for name, source in (("0.17.2", TestingInput(["a"])), ("method", TestingSource(["a"]))):
        flow = Dataflow()
        flow.input("inp", source)
        flow.inspect_worker(lambda first, second, into=seen[name]: into.append((first, second)))
        flow.output("out", TestingOutput([]))
        run_main(flow)
    assert seen == {"0.17.2": [(0, "a")], "method": [("a", 0)]}


@pytest.mark.parametrize("cls", ["FileInput", "CSVInput", "DirInput"])
def test_a_file_input_resumes_positions_an_earlier_release_saved_under_fs_id_names(
    cls: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Earlier aiowax releases named these partitions f"{fs_id}::{path}"; they
    # keep 0.17.2's names now, and a directory of before must still resume
    # (helper-61: it was refused with UnmatchedSnapshotsError).
    from aiowax._compat.adapt import build_now
    from aiowax._connectors.files import CSVSource, DirSource, FileSource
    from aiowax.connectors import files

    data = tmp_path / "in"
    data.mkdir()
    path = data / ("rows.csv" if cls == "CSVInput" else "a.txt")
    path.write_text("name\nx1\nx2\n" if cls == "CSVInput" else "x1\nx2\n")
    db = tmp_path / "db"
    init_db_dir(db, 1)
    source_cls = getattr(files, cls)
    base = {"FileInput": FileSource, "CSVInput": CSVSource, "DirInput": DirSource}[cls]

    def run(out: list[Any]) -> None:
        flow = Dataflow()
        flow.input("inp", source_cls(data if cls == "DirInput" else path))
        flow.output("out", TestingSink(out))
        run_main(flow, epoch_interval=timedelta(0), recovery_config=RecoveryConfig(db))

    with monkeypatch.context() as old_release:
        old_release.setattr(source_cls, "list_parts", base.list_parts)
        old_release.setattr(
            source_cls,
            "build_part",
            # Called with or without ``now``, as the adapter sees fit.
            lambda self, *args: base.build_part(self, build_now(), *args[-2:]),
        )
        first: list[Any] = []
        run(first)
    assert len(first) == 2
    with path.open("a") as f:
        f.write("x3\n")
    second: list[Any] = []
    run(second)
    assert second == ([{"name": "x3"}] if cls == "CSVInput" else ["x3"])
