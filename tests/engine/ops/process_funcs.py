"""The user functions of ``test_processes.py``, run in worker processes.

Worker processes import this module to unpickle them, so it imports only
the standard library: a light module keeps each test's process start short.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any


def scramble(x: int) -> int:
    """Not monotonic, so a result out of order shows."""
    return (x * 7919) % 10007


def is_odd(x: int) -> bool:
    return x % 2 == 1


def third_or_none(x: int) -> int | None:
    return x // 3 if x % 3 == 0 else None


def repeat_self(x: int) -> list[int]:
    """``x`` copies of ``x``: zero, one or many elements per item."""
    return [x] * (x % 4)


def gen_up_to(x: int) -> Iterator[int]:
    """A generator: it cannot cross processes, its elements can."""
    yield from range(x % 3)


def fail_on_70(x: int) -> int:
    if x == 70:
        raise ValueError(f"no {x}")
    return x * 10


def fail_on_10(x: int) -> int:
    if x == 10:
        raise ValueError(f"no {x}")
    return x * 10


def flat_fail_midway(x: int) -> Iterator[int]:
    """Item 5 yields one element, then raises."""
    yield x
    if x == 5:
        raise KeyError(x)
    yield -x


def stop_on_3(x: int) -> int:
    if x == 3:
        raise StopIteration
    return x


def not_a_bool(x: int) -> Any:
    return x if x == 4 else True


class NeedsTwoArgs(Exception):
    """Pickles, but does not unpickle: its __init__ takes two arguments."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}/{b}")


def raise_unpicklable_error(x: int) -> int:
    if x == 2:
        raise NeedsTwoArgs(x, 0)
    return x


def lock_on_2(x: int) -> Any:
    return threading.Lock() if x == 2 else x


def returns_coroutine(x: int) -> Coroutine[Any, Any, None]:
    return asyncio.sleep(0)


def exit_on_2(x: int) -> int:
    """Ends the worker process as a crash would."""
    if x == 2:
        os._exit(3)
    return x


def sigint_ignored(x: int) -> bool:
    """Ctrl-C must not reach a worker process (the parent stops gracefully)."""
    return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def hang_after_touch(path: str) -> str:
    """Say it started (by creating ``path``), then run for longer than any test."""
    Path(path).touch()
    time.sleep(60)
    return path


def fail_once_touched(item: str) -> str:
    """``"fail:PATH"`` raises once PATH exists; ``"hang:PATH"`` creates it and hangs."""
    what, _, path = item.partition(":")
    if what == "hang":
        return hang_after_touch(path)
    if what == "fail":
        deadline = time.monotonic() + 10
        while not Path(path).exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        raise ValueError("failed while another chunk runs")
    return item


class HoldsALock:
    """A callable object that does not pickle."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __call__(self, x: int) -> int:
        return x


def _refuse_to_load() -> Any:
    raise ImportError("not here")


class LoadsOnlyHere:
    """Pickles in the parent; unpickling it (in a worker process) raises ImportError."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_refuse_to_load, ())

    def __call__(self, x: int) -> int:
        return x


def record_pid(path: str) -> str:
    """Append this worker process's id to ``path``, then hand the item on."""
    with open(path, "a") as log:
        print(os.getpid(), file=log)
    return path
