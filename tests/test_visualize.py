"""The dataflow graph: `aiowax.visualize` as JSON, as Mermaid, and on the command line.

What the JSON matches: the output of Bytewax 0.17.2's
``bytewax._encoder.encode_dataflow`` for the same flow (checked by
running it on a flow using every operator, with ``pip install
bytewax==0.17.2``): the envelope ``{"type": "Dataflow", "steps": [...]}``,
the step type names (``inspect_worker`` is an ``Inspect`` step there too),
the argument keys (``input``, ``output``, ``mapper``, ``predicate``,
``inspector``, ``builder``, ``folder``, ``reducer``, ``is_complete``,
``max_size``, ``timeout``, ``clock_config``, ``window_config``), sources
and sinks as ``{"type": class name}``, functions by ``__name__``, classes
by qualified name, clock and window configurations nested with their
fields (no ``offset`` in a ``TumblingWindow``), ``str(timedelta)`` and ISO
8601 instants, ``sort_keys=True`` on one line.

What differs on purpose:

- every step has a ``step_id``: 0.17.2's stateless steps took none, ours
  (``map``, ``filter``...) do, and the id-less ones (``inspect*``,
  ``redistribute``) show the id aiowax made up for them (``inspect#5``),
  which errors and statistics name;
- class names are the ones aiowax (and Bytewax 0.18) use:
  ``TestingSource`` where 0.17.2 had ``TestingInput``;
- a callable object or `functools.partial` is named by its class, where
  the reference's encoder raised ``TypeError``;
- options beyond the reference (``max_concurrency``, ``processes``,
  ``EventClockConfig.on_late``) appear only when set, and a named flow has
  a ``flow_id`` as in Bytewax 0.18;
- ``align_to`` is shown in UTC, since aiowax normalises it.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aiowax._definition.steps import Step
from aiowax._engine.kinds import KINDS
from aiowax.connectors.stdio import StdOutSink
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSink, TestingSource
from aiowax.visualize import to_dict, to_json, to_mermaid
from aiowax.window import (
    EventClockConfig,
    SessionWindow,
    SlidingWindow,
    SystemClockConfig,
    TumblingWindow,
)

ALIGN = datetime(2022, 1, 1, tzinfo=UTC)


def get_time(value: Any) -> datetime:
    return ALIGN


def double(x: int) -> int:
    return 2 * x


class Appender:
    """A callable object: it has no ``__name__`` of its own."""

    def __call__(self, acc: list[Any], value: Any) -> list[Any]:
        return [*acc, value]


def every_operator_flow() -> Dataflow:
    flow = Dataflow()
    flow.input("inp", TestingSource(range(3)))
    flow.map("add_one", lambda x: x + 1)
    flow.filter("keep", lambda x: True)
    flow.filter_map("fm", double)
    flow.flat_map("flat", str.split)
    flow.inspect(print)
    flow.inspect_epoch(print)
    flow.inspect_worker(print)
    flow.redistribute()
    flow.batch("bat", 10, timedelta(days=1, microseconds=5))
    flow.reduce("red", max, bool)
    flow.stateful_map("sm", lambda: 0, lambda s, v: (s, v))
    flow.fold_window(
        "fw",
        EventClockConfig(get_time, wait_for_system_duration=timedelta(seconds=10)),
        TumblingWindow(length=timedelta(minutes=1), align_to=ALIGN),
        list,
        Appender(),
    )
    flow.reduce_window(
        "rw",
        SystemClockConfig(),
        SlidingWindow(length=timedelta(hours=1), offset=timedelta(minutes=30), align_to=ALIGN),
        max,
    )
    flow.collect_window("cw", SystemClockConfig(), SessionWindow(gap=timedelta(seconds=5)))
    flow.output("out", TestingSink([]))
    flow.input("inp2", TestingSource([1]))
    flow.output("out2", StdOutSink())
    return flow


EXPECTED: dict[str, Any] = {
    "type": "Dataflow",
    "steps": [
        {"type": "Input", "step_id": "inp", "input": {"type": "TestingSource"}},
        {"type": "Map", "step_id": "add_one", "mapper": "<lambda>"},
        {"type": "Filter", "step_id": "keep", "predicate": "<lambda>"},
        {"type": "FilterMap", "step_id": "fm", "mapper": "double"},
        {"type": "FlatMap", "step_id": "flat", "mapper": "split"},
        {"type": "Inspect", "step_id": "inspect#5", "inspector": "print"},
        {"type": "InspectEpoch", "step_id": "inspect_epoch#6", "inspector": "print"},
        {"type": "Inspect", "step_id": "inspect_worker#7", "inspector": "print"},
        {"type": "Redistribute", "step_id": "redistribute#8"},
        {"type": "Batch", "step_id": "bat", "max_size": 10, "timeout": "1 day, 0:00:00.000005"},
        {"type": "Reduce", "step_id": "red", "reducer": "max", "is_complete": "bool"},
        {"type": "StatefulMap", "step_id": "sm", "builder": "<lambda>", "mapper": "<lambda>"},
        {
            "type": "FoldWindow",
            "step_id": "fw",
            "clock_config": {
                "type": "EventClockConfig",
                "dt_getter": "get_time",
                "wait_for_system_duration": "0:00:10",
            },
            "window_config": {
                "type": "TumblingWindow",
                "length": "0:01:00",
                "align_to": "2022-01-01T00:00:00+00:00",
            },
            "builder": "list",
            "folder": "Appender",
        },
        {
            "type": "ReduceWindow",
            "step_id": "rw",
            "clock_config": {"type": "SystemClockConfig"},
            "window_config": {
                "type": "SlidingWindow",
                "length": "1:00:00",
                "offset": "0:30:00",
                "align_to": "2022-01-01T00:00:00+00:00",
            },
            "reducer": "max",
        },
        {
            "type": "CollectWindow",
            "step_id": "cw",
            "clock_config": {"type": "SystemClockConfig"},
            "window_config": {"type": "SessionWindow", "gap": "0:00:05"},
        },
        {"type": "Output", "step_id": "out", "output": {"type": "TestingSink"}},
        {"type": "Input", "step_id": "inp2", "input": {"type": "TestingSource"}},
        {"type": "Output", "step_id": "out2", "output": {"type": "StdOutSink"}},
    ],
}


# -- JSON ----------------------------------------------------------------------


def test_the_every_operator_flow_uses_every_step_kind() -> None:
    # A new operator fails here until the flow (and EXPECTED) shows it.
    used = {type(step) for step in every_operator_flow().steps}
    missing: set[type[Step]] = set(KINDS) - used
    assert missing == set()


def test_dict_of_a_flow_using_every_operator() -> None:
    assert to_dict(every_operator_flow()) == EXPECTED


def test_json_is_one_line_with_sorted_keys() -> None:
    text = to_json(every_operator_flow())
    assert "\n" not in text
    assert text == json.dumps(EXPECTED, sort_keys=True)

    key_orders: list[list[str]] = []

    def record(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        key_orders.append([key for key, _ in pairs])
        return dict(pairs)

    json.loads(text, object_pairs_hook=record)
    assert len(key_orders) == 1 + len(EXPECTED["steps"]) + 2 * 3 + 4  # steps, configs, sources
    assert all(keys == sorted(keys) for keys in key_orders)
    assert text.startswith('{"steps": [{"input": {"type": "TestingSource"}, "step_id": "inp"')


class _Named:
    def method(self, x: Any) -> Any:
        return x


@pytest.mark.parametrize(
    ("mapper", "name"),
    [
        (lambda x: x, "<lambda>"),
        (double, "double"),
        (len, "len"),
        (str.upper, "upper"),
        (_Named().method, "method"),
        (int, "int"),
        (_Named, "_Named"),
        (Appender(), "Appender"),
        (functools.partial(double), "partial"),
    ],
)
def test_callables_are_named(mapper: Any, name: str) -> None:
    flow = Dataflow()
    flow.map("m", mapper)
    assert to_dict(flow)["steps"] == [{"type": "Map", "step_id": "m", "mapper": name}]


def test_options_beyond_the_reference_appear_only_when_set() -> None:
    flow = Dataflow()
    flow.map("pooled", double, processes=2, max_concurrency=3)
    flow.inspect(print, max_concurrency=1)
    flow.collect_window(
        "cw",
        EventClockConfig(get_time, on_late=print),
        SessionWindow(gap=timedelta(milliseconds=1500)),
    )
    assert to_dict(flow)["steps"] == [
        {
            "type": "Map",
            "step_id": "pooled",
            "mapper": "double",
            "processes": 2,
            "max_concurrency": 3,
        },
        {"type": "Inspect", "step_id": "inspect#1", "inspector": "print", "max_concurrency": 1},
        {
            "type": "CollectWindow",
            "step_id": "cw",
            "clock_config": {
                "type": "EventClockConfig",
                "dt_getter": "get_time",
                "wait_for_system_duration": "0:00:00",
                "on_late": "print",
            },
            "window_config": {"type": "SessionWindow", "gap": "0:00:01.500000"},
        },
    ]


def named_flow(name: str) -> Dataflow:
    try:
        return Dataflow(name=name)  # type: ignore[call-arg]
    except TypeError:  # a Dataflow that does not take a name yet
        flow = Dataflow()
        flow.name = name  # type: ignore[attr-defined]
        return flow


def test_a_named_flow_has_a_flow_id() -> None:
    unnamed = Dataflow()
    unnamed.input("inp", TestingSource([]))
    assert "flow_id" not in to_dict(unnamed)
    flow = named_flow("orders")
    flow.input("inp", TestingSource([]))
    assert to_dict(flow) == {
        "type": "Dataflow",
        "flow_id": "orders",
        "steps": [{"type": "Input", "step_id": "inp", "input": {"type": "TestingSource"}}],
    }


@pytest.mark.parametrize("render", [to_dict, to_json, to_mermaid])
def test_something_else_than_a_dataflow_is_refused(render: Any) -> None:
    with pytest.raises(TypeError, match=r"expected an aiowax\.dataflow\.Dataflow, got list"):
        render([])


# -- Mermaid -------------------------------------------------------------------


def two_input_flow() -> Dataflow:
    flow = Dataflow()
    flow.input("clicks", TestingSource([]))
    flow.map("parse", double)
    flow.redistribute()
    flow.output("clicks_out", TestingSink([]))
    flow.input("views", TestingSource([]))
    flow.stateful_map("count", int, lambda s, v: (s + 1, s + 1))
    flow.output("views_out", StdOutSink())
    return flow


TWO_INPUT_MERMAID = """\
flowchart TD
    subgraph p0["clicks"]
        s0["clicks (Input)"]
        s1["parse (Map)"]
        s2["redistribute#35;2 (Redistribute)"]
        s3["clicks_out (Output)"]
        s0 --> s1
        s1 --> s2
        s2 --> s3
    end
    subgraph p1["views"]
        s4["views (Input)"]
        s5["count (StatefulMap)"]
        s6["views_out (Output)"]
        s4 --> s5
        s5 --> s6
    end"""


def test_mermaid_of_a_two_input_flow() -> None:
    assert to_mermaid(two_input_flow()) == TWO_INPUT_MERMAID


def test_mermaid_escapes_what_would_break_a_label() -> None:
    flow = named_flow('shop "eu"')
    flow.input('say "hi"]; %% <b>', TestingSource([]))
    flow.map("m[1](2)\nend", double)
    assert to_mermaid(flow).splitlines() == [
        "---",
        'title: "shop \\"eu\\""',
        "---",
        "flowchart TD",
        '    subgraph p0["say #34;hi#34;]#59; #37;#37; #60;b#62;"]',
        '        s0["say #34;hi#34;]#59; #37;#37; #60;b#62; (Input)"]',
        '        s1["m[1](2)#10;end (Map)"]',
        "        s0 --> s1",
        "    end",
    ]


def test_mermaid_shows_steps_before_any_input() -> None:
    # Such a flow cannot run, which is when one wants to look at it.
    flow = Dataflow()
    flow.map("early", double)
    flow.input("inp", TestingSource([]))
    assert to_mermaid(flow).splitlines()[1:] == [
        '    subgraph p0["(no input)"]',
        '        s0["early (Map)"]',
        "    end",
        '    subgraph p1["inp"]',
        '        s1["inp (Input)"]',
        "    end",
    ]


# -- the command line ----------------------------------------------------------

FLOW_MODULE = """\
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSink, TestingSource

def add_one(x):
    return x + 1

flow = Dataflow()
flow.input("inp", TestingSource([1, 2]))
flow.map("add_one", add_one)
flow.output("out", TestingSink([]))

async def get_flow(step_id):
    f = Dataflow()
    f.input(step_id, TestingSource([]))
    return f

not_a_flow = 42

def broken():
    raise RuntimeError("no flow today")
"""

FLOW_JSON = {
    "type": "Dataflow",
    "steps": [
        {"type": "Input", "step_id": "inp", "input": {"type": "TestingSource"}},
        {"type": "Map", "step_id": "add_one", "mapper": "add_one"},
        {"type": "Output", "step_id": "out", "output": {"type": "TestingSink"}},
    ],
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("visualize")
    (root / "viz_flows.py").write_text(FLOW_MODULE)
    return root


def visualize(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiowax.visualize", *args],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_prints_json(project: Path) -> None:
    done = visualize(project, "viz_flows.py", "-o", "json")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == json.dumps(FLOW_JSON, sort_keys=True) + "\n"


def test_cli_prints_mermaid_by_default(project: Path) -> None:
    done = visualize(project, "viz_flows:flow")
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == textwrap.dedent(
        """\
        flowchart TD
            subgraph p0["inp"]
                s0["inp (Input)"]
                s1["add_one (Map)"]
                s2["out (Output)"]
                s0 --> s1
                s1 --> s2
            end
        """
    )


def test_cli_awaits_an_async_factory(project: Path) -> None:
    done = visualize(project, "--output-format=json", "viz_flows:get_flow('made')")
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout)["steps"] == [
        {"type": "Input", "step_id": "made", "input": {"type": "TestingSource"}}
    ]


@pytest.mark.parametrize(
    ("flow", "message", "traceback"),
    [
        (
            "no_such_module",
            "cannot load 'no_such_module': module 'no_such_module' not found",
            False,
        ),
        ("viz_flows:not_a_flow", "attribute 'not_a_flow' is int 42, not an aiowax.dataflow", False),
        ("viz_flows:broken()", "factory broken() raised RuntimeError", True),
        ("viz_flows:get_flow(", "invalid import string 'viz_flows:get_flow('", False),
    ],
)
def test_cli_bad_flow_is_an_error(project: Path, flow: str, message: str, traceback: bool) -> None:
    done = visualize(project, flow)
    assert done.returncode == 2
    assert done.stdout == ""
    prefix = "python -m aiowax.visualize: error: "
    errors = [line for line in done.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1
    assert message in errors[0]
    # The user's own code raising is the one case worth a traceback.
    assert ("Traceback" in done.stderr) is traceback
    assert ("no flow today" in done.stderr) is traceback


def test_cli_refuses_an_unknown_format(project: Path) -> None:
    done = visualize(project, "viz_flows", "-o", "dot")
    assert done.returncode == 2
    assert "invalid choice: 'dot'" in done.stderr
    assert done.stdout == ""


# -- the docs ------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[1] / "docs" / "visualize.md"


def _doc_block(language: str) -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)
    return str(blocks[0])


def test_the_docs_show_what_the_example_flow_gives() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_doc_block("python"), "clicks.py", "exec"), namespace)
    flow = namespace["flow"]
    assert json.loads(_doc_block("json")) == to_dict(flow)
    assert _doc_block("mermaid") == to_mermaid(flow) + "\n"
