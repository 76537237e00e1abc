"""Calling methods written in Bytewax 0.17.2's shape the way the engine calls them.

0.17.2's ``PartitionedInput.build_part(for_part, resume_state)`` and
``DynamicInput.build(worker_index, worker_count)`` take no ``now``; the
engine passes it first. `accept_engine_now` looks at a class's method once,
when the class is created, and if it has 0.17.2's shape wraps it so that it
takes both calls: the engine's (``now`` first) and the user's own direct
0.17.2 call. Looking once keeps the per-call cost to a length check, and a
subclass written in the method API's shape (with ``now``) is left alone.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

#: The ``now`` of the engine's build call in progress, for 0.17.2-shaped
#: builders that delegate to aiowax sources (which take it): a virtual clock
#: in tests must reach them too.
_ENGINE_NOW: ContextVar[datetime | None] = ContextVar("aiowax_engine_now", default=None)


def build_now() -> datetime:
    """The ``now`` the engine passed to the build call in progress, else the time (UTC)."""
    now = _ENGINE_NOW.get()
    return now if now is not None else datetime.now(UTC)


def positional_params(fn: Callable[..., Any]) -> int | None:
    """How many positional parameters ``fn`` takes after ``self``; None if any number."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return None
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)


def refuse_other_shape(cls: type, name: str, shape: str, hint: str) -> None:
    """Refuse, when ``cls`` is created, its own method ``name`` if it cannot take ``shape``.

    A source written with a sink's ``build`` (no ``now``), or a sink with a
    source's, fails only when the flow runs, with Python's bare "takes 3
    positional arguments but 4 were given". Said at once instead, with the
    shape the method needs and ``hint``.

    Args:
        cls: A class being created (from ``__init_subclass__``).
        name: The method.
        shape: Its parameters after ``self``, comma-separated.
        hint: What to do instead (a sentence).

    Raises:
        TypeError: ``cls.name`` cannot be called with ``shape``'s arguments.
    """
    fn = cls.__dict__.get(name)
    if not inspect.isfunction(fn):
        return
    wanted = len(shape.split(", "))
    params = list(inspect.signature(fn).parameters.values())[1:]
    if any(p.kind is p.VAR_POSITIONAL for p in params):
        return
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = sum(p.default is p.empty for p in positional)
    if required <= wanted <= len(positional):
        return
    taken = ", ".join(p.name for p in positional)
    msg = f"{cls.__qualname__}.{name}({taken}) cannot take ({shape}): {hint}"
    raise TypeError(msg)


def accept_engine_now(cls: type, name: str, legacy_params: int) -> None:
    """Let ``cls``'s own method ``name``, if written without ``now``, take the engine's call.

    Args:
        cls: A class being created (from ``__init_subclass__``).
        name: ``"build_part"`` or ``"build"``.
        legacy_params: How many positional parameters the 0.17.2 shape takes
            after ``self``; the engine passes one more, ``now``, first.
    """
    fn = cls.__dict__.get(name)
    if not inspect.isfunction(fn) or getattr(fn, "_aiowax_takes_now", False):
        return
    if positional_params(fn) != legacy_params:
        return  # the method API's shape, ``now`` first: the engine calls it as is
    legacy = fn

    @functools.wraps(legacy)
    def adapted(self: Any, *args: Any, **kwargs: Any) -> Any:
        if len(args) != legacy_params + 1:
            return legacy(self, *args, **kwargs)  # the user's own 0.17.2 call
        token = _ENGINE_NOW.set(args[0])
        try:
            return legacy(self, *args[1:], **kwargs)
        finally:
            _ENGINE_NOW.reset(token)

    adapted._aiowax_takes_now = True  # type: ignore[attr-defined]
    setattr(cls, name, adapted)


def next_batch_of(part: Any) -> Callable[[datetime | None], Any]:
    """``part.next_batch`` as a function of ``sched``, whichever shape it was written in.

    0.17.2's ``next_batch()`` takes no ``sched``; the engine's lanes accept
    both shapes, and so must the testing helpers that call it by hand.
    """
    method = part.next_batch
    try:
        params = inspect.signature(method).parameters.values()
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return method  # type: ignore[no-any-return]
    takes_sched = any(
        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params
    )
    if takes_sched:
        return method  # type: ignore[no-any-return]
    return lambda _sched: method()
