"""Clear errors for a step id left out or given where none is taken.

Released Bytewax 0.17 code calls ``flow.map(fn)``; the method API needs
``flow.map("id", fn)``, and ``inspect``/``redistribute`` take no id. Python's
own message for either mistake names a missing or extra argument, not the
step id: `step_id_checked` says what is wrong and shows the call to write.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _shown(value: object, param: str) -> str:
    """How a call example shows an argument: a function by name, else the parameter."""
    if isinstance(value, types.FunctionType | types.BuiltinFunctionType):
        name = value.__name__
        if name.isidentifier():
            return name
    return param


def _example(kind: str, params: list[str], given: dict[str, object], step_id: str) -> str:
    """A call of ``kind`` with a step id, showing the user's functions by name."""
    shown = [_shown(given.get(p), p) for p in params]
    if step_id:
        shown.insert(0, f'"{step_id}"')
    return f"flow.{kind}({', '.join(shown)})"


def _misplaced_step_id(
    kind: str, params: list[str], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str | None:
    """Explain a call that Python refused, if a step id is missing or extra.

    ``params`` are the parameter names after ``self``. A step id where the
    operator takes none, or none where it needs one (Bytewax 0.17 code calls
    ``flow.map(fn)``), would otherwise be reported by Python as a missing or
    extra argument further along, which hides the mistake.
    """
    if params[:1] == ["step_id"]:
        if "step_id" in kwargs or (args and isinstance(args[0], str)):
            return None  # the step id is there: Python's message is right
        rest = params[1:]
        given = {**dict(zip(rest, args, strict=False)), **kwargs}
        step_id = "my_step"
        if len(rest) == 1:  # name the step after its one function
            step_id = _shown(given.get(rest[0]), step_id)
        what = " and ".join(rest) if len(rest) <= 2 else ", ".join(rest)
        msg = (
            f"{kind} needs a step id: a str, unique in the flow, given first, "
            f"before its {what}; for example {_example(kind, rest, given, step_id)}"
        )
        # flow.map(5): the value given is no function either; say so too
        # (a source or a sink is no function).
        [(name, value), *more] = given.items() or [("", None)]
        if not more and name not in ("", "source", "sink") and not callable(value):
            msg += f"; and {value!r} (as its {name}) is not callable"
        return msg
    # An operator without a step id: inspect*, redistribute.
    if "step_id" in kwargs or (args and isinstance(args[0], str) and len(args) > len(params)):
        positional = args if "step_id" in kwargs else args[1:]
        given = {**dict(zip(params, positional, strict=False)), **kwargs}
        return f"{kind} takes no step id; call it as {_example(kind, params, given, '')}"
    return None


def step_id_checked(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Make a builder method explain a step id left out or given too many."""
    signature = inspect.signature(method)
    # The positional ones: keyword-only options (max_concurrency) never
    # take a step id's place.
    params = [
        name
        for name, p in signature.parameters.items()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ][1:]
    kind = method.__name__

    @functools.wraps(method)
    def checked(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            msg = _misplaced_step_id(kind, params, args[1:], kwargs)
            if msg is not None:
                raise TypeError(msg) from None
            # Anything else: Python's own message says it well.
        else:
            step_id = bound.arguments.get("step_id")
            if callable(step_id):
                # The step id and a function swapped: flow.map(fn, "id").
                given = dict(bound.arguments)
                rest = params[1:]
                swapped_id = given.get(rest[0]) if len(rest) == 1 else None
                if isinstance(swapped_id, str):
                    given[rest[0]] = step_id
                else:
                    swapped_id = "my_step"
                msg = (
                    f"{kind}: step_id must be a str, got the callable "
                    f"{_shown(step_id, repr(step_id))}: the step id comes first, for example "
                    f"{_example(kind, rest, given, swapped_id)}"
                )
                raise TypeError(msg)
        return method(*args, **kwargs)

    return checked
