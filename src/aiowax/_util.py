"""Small helpers shared by the public facade and the engine."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any


def install_hint(extra: str) -> str:
    """How to install an optional extra: aiowax is installed from its checkout, not PyPI."""
    return f"pip install '.[{extra}]' in the aiowax checkout (the {extra} extra)"


def fixup_module_metadata(module_name: str, names: Iterable[str], ns: dict[str, Any]) -> None:
    """Make public objects report the public module they are re-exported from.

    Tracebacks, docs and pickled snapshots then name ``aiowax.window.X``
    rather than a private path that may move between releases.

    Only a ``__module__`` that still names a private module (``aiowax._...``)
    is rewritten, so an object exported by two public modules keeps the first
    one that claimed it; a public module that re-exports another's object
    imports it from there, which settles that order (``aiowax`` takes
    ``AbortExecution`` from ``aiowax.inputs``). Public classes nested in an
    exported class (``SimplePollingSource.Retry``) are fixed up with it.

    Args:
        module_name: The public module, usually ``__name__``.
        names: The names it exports, usually ``__all__``.
        ns: Its namespace, usually ``globals()``.
    """
    for name in names:
        _fixup(ns[name], module_name)


def _is_private_home(obj: Any) -> bool:
    home = getattr(obj, "__module__", None)
    return isinstance(home, str) and home.startswith("aiowax._")


def _fixup(obj: Any, module_name: str) -> None:
    if not _is_private_home(obj):
        return
    try:
        obj.__module__ = module_name
    except (AttributeError, TypeError):  # pragma: no cover - builtins
        return
    if isinstance(obj, type):
        for attr, inner in vars(obj).items():
            # Only a class defined in the body (not one merely assigned, like
            # TestingSource.EOF = _Eof), whose qualified name goes through obj.
            nested = (
                isinstance(inner, type)
                and not attr.startswith("_")
                and inner.__qualname__ == f"{obj.__qualname__}.{attr}"
            )
            if nested:
                _fixup(inner, module_name)


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


async def answer_lifespan(
    receive: Callable[[], Awaitable[Any]], send: Callable[[Any], Awaitable[None]]
) -> None:
    """Answer an ASGI lifespan scope of an app that has nothing to start or stop.

    An app served on its own (uvicorn's ``lifespan="auto"``) is sent the
    lifespan protocol; the flow and the metrics belong to whoever made them.
    """
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
