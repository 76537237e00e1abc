"""The one place the runtime reads time from: the `Clock` protocol.

Timers (epoch ends, back-off, ``next_awake``, batch timeouts, window closes),
wall-clock timestamps and waits on worker threads all go through the clock
in force, so a test can put a virtual one in place and make an hour of
event-loop time pass in milliseconds. The clock in force is, in order: one
set for the current context with `set_clock`; one registered for the
running event loop with `register_loop_clock` (the virtual-clock loop of
`aiowax.testing` registers itself); the system clock.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextvars import ContextVar, Token
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import anyio

from aiowax._engine.aio import loop_time_function, running_loop

T = TypeVar("T")


class Clock(Protocol):
    """Event-loop time for timers, wall-clock time for timestamps."""

    def monotonic(self) -> float:
        """Seconds on the event loop's clock (what timers are set against)."""
        ...

    def timer(self) -> Callable[[], float]:
        """A zero-argument function equivalent to `monotonic`, for hot loops."""
        ...

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until `monotonic` reaches ``deadline``."""
        ...

    def deadline_for(self, when: datetime) -> float:
        """Translate a wall-clock instant into a `monotonic` deadline."""
        ...

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking ``fn(*args)`` in a worker thread and await it.

        A virtual clock holds still meanwhile, so timers do not fire early
        just because disk I/O is slower than a jump of virtual time.
        """
        ...


class SystemClock:
    """The event loop's clock for timers, the system's for timestamps."""

    def monotonic(self) -> float:
        return anyio.current_time()

    def timer(self) -> Callable[[], float]:
        if type(self).monotonic is not SystemClock.monotonic:
            return self.monotonic
        return loop_time_function() or self.monotonic

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep_until(self, deadline: float) -> None:
        await anyio.sleep_until(deadline)

    def deadline_for(self, when: datetime) -> float:
        return self.monotonic() + (when - self.now()) / timedelta(seconds=1)

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args)


class LoopClock(SystemClock):
    """A clock whose wall time follows the event loop's time from ``start``.

    On a virtual-time event loop, timers and `now` then jump together, so
    tests see consistent times.
    """

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            msg = f"LoopClock start must be timezone-aware, got {start!r}"
            raise ValueError(msg)
        self._start = start.astimezone(UTC)
        self._origin: float | None = None

    def now(self) -> datetime:
        t = self.monotonic()
        if self._origin is None:
            self._origin = t
        return self._start + timedelta(seconds=t - self._origin)


SYSTEM_CLOCK = SystemClock()

_current: ContextVar[Clock | None] = ContextVar("aiowax_clock", default=None)
_loop_clocks: weakref.WeakKeyDictionary[Any, Clock] = weakref.WeakKeyDictionary()


def register_loop_clock(loop: object, clock: Clock) -> None:
    """Make ``clock`` the clock of every run on ``loop`` (unless one is set)."""
    _loop_clocks[loop] = clock


def current_clock() -> Clock:
    """Return the clock in force here (see the module docs for the order)."""
    clock = _current.get()
    if clock is not None:
        return clock
    loop = running_loop()
    if loop is not None:
        return _loop_clocks.get(loop, SYSTEM_CLOCK)
    return SYSTEM_CLOCK


def set_clock(clock: Clock) -> Token[Clock | None]:
    """Install ``clock`` for this context; returns a token for `reset_clock`."""
    return _current.set(clock)


def reset_clock(token: Token[Clock | None]) -> None:
    """Undo a `set_clock`."""
    _current.reset(token)


async def run_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn(*args)`` in a worker thread through the clock in force.

    Use this rather than ``anyio.to_thread.run_sync`` inside aiowax (see
    `Clock.run_in_thread`).
    """
    return await current_clock().run_in_thread(fn, *args)
