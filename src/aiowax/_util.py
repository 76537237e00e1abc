"""Small helpers shared by the public facade and the engine."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any


def fixup_module_metadata(module_name: str, names: Iterable[str], ns: dict[str, Any]) -> None:
    """Make public objects report the public module they are re-exported from.

    Tracebacks, docs and pickled snapshots then name ``aiowax.window.X``
    rather than a private path that may move between releases.
    """
    for name in names:
        obj = ns[name]
        if getattr(obj, "__module__", "").startswith("aiowax."):
            try:
                obj.__module__ = module_name
            except (AttributeError, TypeError):  # pragma: no cover - builtins
                continue


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """Tell whether calling ``fn`` returns an awaitable, without calling it.

    Sees through ``functools.partial`` and objects with an ``async def
    __call__``; both are common ways users hand in async callables.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    if inspect.isroutine(fn) or not callable(fn):
        return False
    # A callable object: look at its class's ``__call__``.
    return inspect.iscoroutinefunction(type(fn).__call__)


def is_asyncgen_callable(fn: Callable[..., Any]) -> bool:
    """Tell whether calling ``fn`` returns an async generator."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.isasyncgenfunction(fn)


def check_batch_size(owner: str, batch_size: object) -> int:
    """Return ``batch_size`` if it is a positive int; else raise, naming ``owner``.

    Raises:
        TypeError: Not an int (a bool does not count).
        ValueError: Zero or negative.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        msg = f"{owner}: batch_size must be an int, got {batch_size!r}"
        raise TypeError(msg)
    if batch_size < 1:
        msg = f"{owner}: batch_size must be positive, got {batch_size!r}"
        raise ValueError(msg)
    return batch_size


def describe(obj: object, limit: int = 200) -> str:
    """Return ``repr(obj)`` cut to ``limit`` characters, for error messages."""
    text = repr(obj)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
