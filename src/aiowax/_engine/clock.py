"""The one place the runtime reads time from.

Timers (epoch ends, back-off, ``next_awake``, batch timeouts, window closes)
all go through the `Clock` in force, so a test can install a virtual one and
make an hour of event-loop time pass in milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


class Clock:
    """Event-loop time for timers, wall-clock time for timestamps."""

    def monotonic(self) -> float:
        """Seconds on the event loop's clock (what timers are set against)."""
        return anyio.current_time()

    def timer(self) -> Callable[[], float]:
        """Return a zero-argument function equivalent to `monotonic`.

        Hot loops call it once per batch; on asyncio it is the loop's own
        ``time`` method, skipping anyio's backend lookup on every call.
        """
        if type(self).monotonic is not Clock.monotonic:
            return self.monotonic
        try:
            return asyncio.get_running_loop().time
        except RuntimeError:
            return self.monotonic

    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        return datetime.now(UTC)

    async def sleep_until(self, deadline: float) -> None:
        """Sleep until `monotonic` reaches ``deadline``."""
        await anyio.sleep_until(deadline)

    def deadline_for(self, when: datetime) -> float:
        """Translate a wall-clock instant into a `monotonic` deadline."""
        return self.monotonic() + (when - self.now()) / timedelta(seconds=1)


class LoopClock(Clock):
    """A clock whose wall time is derived from the event loop's time.

    With a virtual event-loop clock (see `aiowax.testing`), both timers and
    `now` then jump together, so tests see consistent times.
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


_current: ContextVar[Clock] = ContextVar("aiowax_clock", default=Clock())  # noqa: B039


async def run_in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking ``fn(*args)`` in a worker thread and await its result.

    Use this rather than ``anyio.to_thread.run_sync`` inside aiowax: on the
    virtual-clock loop of `aiowax.testing` it holds time still while the
    thread works, so timers do not fire early just because disk I/O is
    slower than a jump of the virtual clock.
    """
    loop = asyncio.get_running_loop()
    holds = getattr(loop, "aiowax_threads", None)
    if holds is None:
        return await anyio.to_thread.run_sync(fn, *args)
    loop.aiowax_threads = holds + 1  # type: ignore[attr-defined]
    try:
        return await anyio.to_thread.run_sync(fn, *args)
    finally:
        loop.aiowax_threads -= 1  # type: ignore[attr-defined]


def current_clock() -> Clock:
    """Return the clock the runtime should use in this context.

    A clock installed with `set_clock` wins; otherwise an event loop that
    carries its own (the virtual-time loop of `aiowax.testing` does) provides
    it; otherwise the system clock.
    """
    clock = _current.get()
    if type(clock) is Clock:
        try:
            loop_clock = getattr(asyncio.get_running_loop(), "aiowax_clock", None)
        except RuntimeError:
            loop_clock = None
        if isinstance(loop_clock, Clock):
            return loop_clock
    return clock


def set_clock(clock: Clock) -> object:
    """Install ``clock`` for this context; returns a token for `reset_clock`."""
    return _current.set(clock)


def reset_clock(token: object) -> None:
    """Undo a `set_clock`."""
    _current.reset(token)  # type: ignore[arg-type]
