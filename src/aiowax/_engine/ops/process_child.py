"""What runs in the worker processes of a step with ``processes=``.

The parent (`aiowax._engine.ops.processes`) hands the user function to each
process once, when it starts (`install`), then chunks of items as pickled
bytes (`run_chunk`). A chunk's answer is the output of the items before any
failure and, if there was one, a `Failure` saying what went wrong on which
item, so the parent passes that output on as the in-process operators do.

Only the standard library is used here, and nothing is raised to the pool:
whatever comes back must unpickle in the parent, which an arbitrary user
exception, or a result that failed to pickle, may not.
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
import time
import traceback
from bisect import bisect_right
from collections.abc import Callable
from inspect import isawaitable, iscoroutine
from typing import Any, NamedTuple


class Failure(NamedTuple):
    """What went wrong in a chunk, and on which of its items.

    Attributes:
        what: ``"raised"`` (the function raised ``error``), ``"stopped"``
            (it raised StopIteration, which ends a ``map`` quietly),
            ``"awaitable"`` (it returned an awaitable), ``"result"`` (its
            result does not pickle) or ``"load"`` (the function itself did
            not unpickle in this process).
        at: The item's position in the chunk.
        error: The exception, for ``"raised"`` and ``"load"``; one that
            would not cross back is replaced by a `RuntimeError` naming it.
        detail: The traceback in this process, or what failed to pickle.
    """

    what: str
    at: int
    error: BaseException | None
    detail: str


#: The step's user function, unpickled once per process by `install`.
_fn: Callable[[Any], Any] | None = None
#: Why it could not be unpickled: reported by every call instead.
_load_failure: Failure | None = None


#: How often a worker process looks whether its parent is still there.
PARENT_CHECK_S = 1.0


def install(fn_bytes: bytes, parent: int | None = None) -> None:
    """The pool's initializer: unpickle the user function, once per process.

    It must not raise (a failing initializer breaks the pool and loses the
    reason), so a failure is kept and reported by `loaded` and `run_chunk`.
    With ``parent`` (the run's process id), the process exits once that
    process is gone (see `_exit_with`).
    """
    global _fn, _load_failure
    # Ctrl-C in a terminal signals the whole process group. The parent turns
    # SIGINT into a graceful stop, which needs these processes to finish the
    # chunks in flight; the parent shuts them down when its run ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if parent is not None:
        threading.Thread(
            target=_exit_with, args=(parent,), name="aiowax-parent-watch", daemon=True
        ).start()
    try:
        _fn = pickle.loads(fn_bytes)
    except BaseException as error:
        _load_failure = Failure("load", 0, _portable(error), _traceback(error))


def _exit_with(parent: int) -> None:
    """Exit once ``parent`` is no longer this process's parent.

    A parent killed outright (SIGKILL, the OOM killer) cannot shut its pool
    down, and its worker processes would wait for work for ever, each an
    interpreter with the user's module loaded, holding the dead run's
    stdout and stderr open (a pipe reading them never ends). Polled: the
    portable way; Linux's parent-death signal follows the thread that
    started the process (the pool may start one from any thread), not the
    process.
    """
    while True:
        time.sleep(PARENT_CHECK_S)
        if os.getppid() != parent:
            os._exit(1)


def loaded() -> Failure | None:
    """Report whether the function loaded in this process (the parent's start-up probe)."""
    return _load_failure


def run_chunk(flat: bool, payload: bytes) -> bytes:
    """Apply the function to every item of a pickled chunk.

    Args:
        flat: Flatten the results (``flat_map``); else one result per item.
        payload: The pickled list of items.

    Returns:
        The pickled pair ``(output, failure)``: the output of the items
        before the failing one (all of them when ``failure`` is None).
    """
    if _load_failure is not None:
        return pickle.dumps(([], _load_failure), pickle.HIGHEST_PROTOCOL)
    fn = _fn
    assert fn is not None
    items: list[Any] = pickle.loads(payload)
    out: list[Any] = []
    ends: list[int] = []  # flat: len(out) after each item, to find an element's item
    failure: Failure | None = None
    try:
        if flat:
            for item in items:
                part = fn(item)
                if isawaitable(part):
                    _close(part)
                    failure = Failure("awaitable", len(ends), None, type(part).__name__)
                    break
                out.extend(part)
                ends.append(len(out))
        else:
            # C-level map, as in the parent: the list keeps what it got.
            out.extend(map(fn, items))
    except BaseException as error:
        index = len(ends) if flat else len(out)
        failure = Failure("raised", index, _portable(error), _traceback(error))
    if not flat:
        if failure is None and len(out) < len(items):
            failure = Failure("stopped", len(out), None, "")
        failure = _awaitables(out, failure)
    return _answer(out, failure, ends if flat else None)


def _awaitables(out: list[Any], failure: Failure | None) -> Failure | None:
    """Cut ``out`` before the first awaitable result, if the function returned any.

    Checked on the first and last results only (O(1) per chunk, as in the
    parent): a sync function returning coroutines returns them for every item.
    """
    if not out or not (isawaitable(out[0]) or isawaitable(out[-1])):
        return failure
    first = next(i for i, result in enumerate(out) if isawaitable(result))
    kind = type(out[first]).__name__
    for result in out:
        _close(result)
    del out[first:]
    return Failure("awaitable", first, None, kind)


def _answer(out: list[Any], failure: Failure | None, ends: list[int] | None) -> bytes:
    """Pickle ``(out, failure)``; if ``out`` does not pickle, cut it before the culprit."""
    try:
        return pickle.dumps((out, failure), pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        reason = f"{type(error).__name__}: {error}"
    bad = next((i for i, result in enumerate(out) if not _pickles(result)), 0)
    # An element of a flat output belongs to the item whose range holds it.
    index = bisect_right(ends, bad) if ends is not None else bad
    keep = (ends[index - 1] if index else 0) if ends is not None else index
    return pickle.dumps((out[:keep], Failure("result", index, None, reason)))


def _pickles(value: Any) -> bool:
    try:
        pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception:
        return False
    return True


def _portable(error: BaseException) -> BaseException:
    """``error`` if it survives pickling, else a `RuntimeError` describing it.

    An exception class whose ``__init__`` takes other arguments than it
    passes to ``BaseException`` pickles but does not unpickle.
    """
    try:
        pickle.loads(pickle.dumps(error, pickle.HIGHEST_PROTOCOL))
    except Exception as why:
        cls = type(error)
        try:
            text = str(error)
        except Exception:
            text = "(its str() raised)"
        return RuntimeError(
            f"{cls.__module__}.{cls.__qualname__}: {text} (sent back from the worker "
            f"process as a RuntimeError: the exception does not pickle: {why!r})"
        )
    return error


def _traceback(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def _close(value: Any) -> None:
    """Close a coroutine never awaited, so it goes without a warning."""
    if iscoroutine(value):
        value.close()
