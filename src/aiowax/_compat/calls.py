"""Bytewax 0.17.2's calls of `Dataflow` methods, accepted with a `DeprecationWarning`.

0.17.2 wrote ``flow.map(fn)``: ``map``, ``filter``, ``filter_map`` and
``flat_map`` took no step id. Such a call still adds its step, under an id
the flow derives from the step's position and the function's name
(``map#3:add_one``): the same flow code gives the same ids on every run, so
recovery finds its snapshots. The warning shows the call to write instead.

0.17.2 also named the second argument of ``input`` and ``output`` ``input``
and ``output``, where the method API says ``source`` and ``sink``; those
keywords are renamed, with a warning too.

``inspect``, ``inspect_epoch`` and ``inspect_worker`` take no step id in
0.17.2 and in the method API alike: their calls need nothing here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from aiowax._compat.warn import deprecated_0172
from aiowax._definition.step_ids import _example, _shown

if TYPE_CHECKING:
    from aiowax._definition.flow import Dataflow

_P = ParamSpec("_P")
_R = TypeVar("_R")

#: 0.17.2's keyword for the method API's, per method.
_RENAMED_KEYWORDS = {"input": ("input", "source"), "output": ("output", "sink")}

#: The methods 0.17.2 called without a step id, and their function's parameter.
_NO_STEP_ID = {"map": "mapper", "filter": "predicate", "filter_map": "mapper", "flat_map": "mapper"}


def accepts_0172_calls(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Let a `Dataflow` method also take Bytewax 0.17.2's call forms.

    Outside `aiowax._definition.step_ids.step_id_checked`: what 0.17.2
    wrote is turned into the method API's call first, and anything else
    goes on unchanged, to be checked there.
    """
    kind = method.__name__
    # Called with the arguments rearranged, which ParamSpec cannot follow.
    target: Callable[..., Any] = method
    fn_param = _NO_STEP_ID.get(kind)
    renamed = _RENAMED_KEYWORDS.get(kind)

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        flow: Dataflow = args[0]
        rest = args[1:]
        if renamed is not None:
            old, new = renamed
            if old in kwargs and new not in kwargs:
                deprecated_0172(
                    f"{kind}: the keyword {old}= is Bytewax 0.17's name; write {new}= "
                    f"(or pass it by position)"
                )
                kwargs[new] = kwargs.pop(old)
        if fn_param is not None and "step_id" not in kwargs:
            fn: Any = None
            if len(rest) == 1 and fn_param not in kwargs and not isinstance(rest[0], str):
                fn = rest[0]
            elif not rest and fn_param in kwargs:
                fn = kwargs[fn_param]
            if callable(fn):
                kwargs.pop(fn_param, None)
                # A lambda's "<lambda>" says nothing: the position alone names it.
                name = getattr(fn, "__name__", None)
                if not (isinstance(name, str) and name.isidentifier()):
                    name = None
                step_id = flow._derived_step_id(kind, name)
                made_of = "its position in the flow" + (" and its function's name" if name else "")
                deprecated_0172(
                    f"flow.{kind}({_shown(fn, fn_param)}) without a step id is Bytewax 0.17's "
                    f"form; this step gets the id {str(step_id)!r}, made of {made_of}. "
                    f"Give it an id: "
                    f"{_example(kind, [fn_param], {fn_param: fn}, _shown(fn, 'my_step'))}"
                )
                return target(flow, step_id, fn, **kwargs)
        return target(*args, **kwargs)

    return call
