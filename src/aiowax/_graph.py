"""The dataflow graph: a flow's steps as plain data, as JSON, and as a Mermaid chart.

The data has the shape Bytewax 0.17.2's dataflow encoder gave (its
``bytewax._encoder.encode_dataflow``), so that tools written against that
encoder read ours: ``{"type": "Dataflow", "steps": [...]}``, one object per
step with its Bytewax type name and the arguments the user passed, under
the reference's argument names. Values are rendered the way that encoder
rendered them: a function by its ``__name__``, a class by its qualified
name, a source or sink as ``{"type": class name}``, a clock or window
configuration as a nested object, a `timedelta` as ``str(td)`` and a
`datetime` as ISO 8601.

Nothing here looks at the engine: the steps are read from the definition
(``aiowax._definition.steps``) generically, so a new operator appears in
the graph without a change here.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import re
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

from aiowax._definition.flow import Dataflow
from aiowax._definition.inputs import Source
from aiowax._definition.outputs import Sink
from aiowax._definition.steps import InputStep, InspectWorkerStep, Step
from aiowax._definition.window import ClockConfig, TumblingWindow, WindowConfig

# Where the type name is not the step's kind in CamelCase: Bytewax 0.17.2
# encodes ``inspect_worker`` as an ``Inspect`` step.
_TYPE_OVERRIDES: dict[type[Step], str] = {InspectWorkerStep: "Inspect"}

# The reference calls the argument of ``input``/``output`` by the step's name.
_RENAMED_FIELDS = {"source": "input", "sink": "output"}

# Fields of a step that are not arguments the user passed (a window step's
# emit_metadata follows its pipeline's input: see WindowStep).
_SKIPPED_FIELDS = frozenset({"step_id", "index", "emit_metadata"})

# Options beyond the reference: shown only when the user set them, so a flow
# that uses none has exactly the reference's shape.
_OPTIONAL_FIELDS = frozenset({"max_concurrency", "processes"})


def step_type(step: Step) -> str:
    """The Bytewax type name of a step: ``"Map"``, ``"FoldWindow"``...

    Args:
        step: A step of a flow.

    Returns:
        The name the reference's encoder gives a step of that kind.
    """
    override = _TYPE_OVERRIDES.get(type(step))
    if override is not None:
        return override
    return "".join(word.capitalize() for word in step.kind.split("_"))


def callable_name(fn: object) -> str:
    """How the graph names a user's callable.

    Args:
        fn: A function, builtin, method, class or callable object.

    Returns:
        A class's qualified name (as the reference gives ``list`` for a
        ``list`` builder), else the callable's ``__name__`` (``"<lambda>"``
        for a lambda), else the name of its class (a callable object, a
        `functools.partial`; the reference refused to encode those).
    """
    if inspect.isclass(fn):
        return fn.__qualname__
    name = getattr(fn, "__name__", None)
    if isinstance(name, str):
        return name
    return type(fn).__name__


def _config(obj: ClockConfig | WindowConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(obj).__name__}
    if not dataclasses.is_dataclass(obj):
        return out
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        # Our TumblingWindow is a SlidingWindow whose offset is its length;
        # the reference's has no offset. None marks an unset hook (on_late).
        if value is None or (isinstance(obj, TumblingWindow) and f.name == "offset"):
            continue
        out[f.name] = encode_value(value)
    return out


def encode_value(value: object) -> Any:
    """Turn a step's argument into JSON-ready data, as the reference encoded it.

    Args:
        value: What the user passed to a `Dataflow` method.

    Returns:
        A JSON-compatible value: plain data as is, a `timedelta` as
        ``str(td)`` (``"0:00:10"``), a `datetime` as its ISO 8601 text, a
        source, sink, clock or window configuration as an object with a
        ``"type"``, a callable by `callable_name`.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, date):  # a datetime too
        return value.isoformat()
    if isinstance(value, ClockConfig | WindowConfig):
        return _config(value)
    if isinstance(value, Source | Sink):
        return {"type": type(value).__name__}
    if isinstance(value, list | tuple):
        return [encode_value(v) for v in value]
    if callable(value):
        return callable_name(value)
    return {"type": type(value).__name__}


def step_to_dict(step: Step) -> dict[str, Any]:
    """One step as the reference's encoder rendered it.

    Args:
        step: A step of a flow.

    Returns:
        ``{"type": ..., "step_id": ..., <argument>: ...}``. Steps that take
        no id (``inspect``, ``redistribute``...) carry the id aiowax made up
        for them, which is the one errors and statistics name.
    """
    out: dict[str, Any] = {"type": step_type(step), "step_id": step.step_id}
    for f in dataclasses.fields(step):
        if f.name in _SKIPPED_FIELDS:
            continue
        value = getattr(step, f.name)
        if f.name in _OPTIONAL_FIELDS and value is None:
            continue
        out[_RENAMED_FIELDS.get(f.name, f.name)] = encode_value(value)
    return out


def _checked(flow: object) -> Dataflow:
    if not isinstance(flow, Dataflow):
        msg = f"expected an aiowax.dataflow.Dataflow, got {type(flow).__name__} {flow!r:.60}"
        raise TypeError(msg)
    return flow


def to_dict(flow: Dataflow) -> dict[str, Any]:
    """The graph of a flow as plain data, in the shape of Bytewax's encoder.

    One object per step, in the order the steps were added: its Bytewax
    type (``"Map"``, ``"StatefulMap"``, ``"FoldWindow"``...), its
    ``step_id``, and what the user passed, under the reference's argument
    names. Callables are named (``"<lambda>"`` for a lambda), sources and
    sinks are ``{"type": class name}``, clock and window configurations are
    nested objects, durations are ``str(timedelta)`` and instants ISO 8601.
    ``max_concurrency`` and ``processes`` appear only when set. The flow's
    name, when it has one, is ``"flow_id"``.

    Examples:
        >>> from aiowax.dataflow import Dataflow
        >>> from aiowax.testing import TestingSink, TestingSource
        >>> flow = Dataflow()
        >>> flow.input("inp", TestingSource([1, 2]))
        >>> flow.map("add_one", lambda x: x + 1)
        >>> flow.output("out", TestingSink([]))
        >>> to_dict(flow)["steps"][1]
        {'type': 'Map', 'step_id': 'add_one', 'mapper': '<lambda>'}

    Args:
        flow: The flow; it is not run, and nothing in it is called.

    Returns:
        ``{"type": "Dataflow", "steps": [...]}``, JSON-ready.

    Raises:
        TypeError: ``flow`` is not an `aiowax.dataflow.Dataflow`.
    """
    out: dict[str, Any] = {
        "type": "Dataflow",
        "steps": [step_to_dict(step) for step in _checked(flow).steps],
    }
    # Dataflow may carry a name (several flows in one process); Bytewax
    # 0.18 calls it flow_id.
    name = getattr(flow, "name", None)
    if name is not None:
        out["flow_id"] = name
    return out


def to_json(flow: Dataflow) -> str:
    """The graph of a flow as JSON, as Bytewax's ``encode_dataflow`` wrote it.

    Examples:
        >>> from aiowax.dataflow import Dataflow
        >>> from aiowax.testing import TestingSink, TestingSource
        >>> flow = Dataflow()
        >>> flow.input("inp", TestingSource([1, 2]))
        >>> flow.output("out", TestingSink([]))
        >>> print(to_json(flow))  # doctest: +NORMALIZE_WHITESPACE
        {"steps": [{"input": {"type": "TestingSource"}, "step_id": "inp", "type": "Input"},
                   {"output": {"type": "TestingSink"}, "step_id": "out", "type": "Output"}],
         "type": "Dataflow"}

    Args:
        flow: The flow; it is not run.

    Returns:
        `to_dict` of the flow on one line, keys sorted.

    Raises:
        TypeError: ``flow`` is not an `aiowax.dataflow.Dataflow`.
    """
    return json.dumps(to_dict(flow), sort_keys=True)


# -- Mermaid ------------------------------------------------------------------

# Characters a quoted Mermaid label shows as they are; every other one is
# written as an entity code (#35; for '#'), so no step id can end the label,
# open a comment or be read as HTML.
_PLAIN_LABEL = re.compile(r"[\w .,:/()\[\]'+=!?@-]")


def mermaid_label(text: str) -> str:
    """``text`` as a double-quoted Mermaid label, special characters escaped.

    >>> mermaid_label('say "hi" #1')
    '"say #34;hi#34; #35;1"'
    """
    escaped = "".join(c if _PLAIN_LABEL.fullmatch(c) else f"#{ord(c)};" for c in text)
    return f'"{escaped}"'


def _pipelines(flow: Dataflow) -> Iterator[tuple[str, list[tuple[int, Step]]]]:
    """Each pipeline's title and its steps, numbered by their place in the flow."""
    current: list[tuple[int, Step]] = []
    for index, step in enumerate(flow.steps):
        if isinstance(step, InputStep) and current:
            yield _title(current), current
            current = []
        current.append((index, step))
    if current:
        yield _title(current), current


def _title(steps: list[tuple[int, Step]]) -> str:
    first = steps[0][1]
    # A flow that cannot run (steps before any input) still gets a picture.
    return first.step_id if isinstance(first, InputStep) else "(no input)"


def to_mermaid(flow: Dataflow) -> str:
    """The graph of a flow as a Mermaid flowchart.

    Each pipeline (an input and the steps after it) is a subgraph named by
    its input's step id; each step a node labelled ``step_id (Type)``,
    linked to the next in order. A named flow gets the name as its title.

    Examples:
        >>> from aiowax.dataflow import Dataflow
        >>> from aiowax.testing import TestingSink, TestingSource
        >>> flow = Dataflow()
        >>> flow.input("inp", TestingSource([1, 2]))
        >>> flow.output("out", TestingSink([]))
        >>> print(to_mermaid(flow))
        flowchart TD
            subgraph p0["inp"]
                s0["inp (Input)"]
                s1["out (Output)"]
                s0 --> s1
            end

    Args:
        flow: The flow; it is not run.

    Returns:
        The chart's text, for a ``mermaid`` code block or the Mermaid CLI.

    Raises:
        TypeError: ``flow`` is not an `aiowax.dataflow.Dataflow`.
    """
    lines: list[str] = []
    name = getattr(_checked(flow), "name", None)
    if name is not None:
        # JSON text is a valid YAML string, whatever the name holds.
        lines += ["---", f"title: {json.dumps(str(name))}", "---"]
    lines.append("flowchart TD")
    for number, (title, steps) in enumerate(_pipelines(flow)):
        lines.append(f"    subgraph p{number}[{mermaid_label(title)}]")
        for index, step in steps:
            label = mermaid_label(f"{step.step_id} ({step_type(step)})")
            lines.append(f"        s{index}[{label}]")
        for (up, _), (down, _) in itertools.pairwise(steps):
            lines.append(f"        s{up} --> s{down}")
        lines.append("    end")
    return "\n".join(lines)
