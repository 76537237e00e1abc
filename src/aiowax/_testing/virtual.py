"""An asyncio event loop whose clock jumps ahead whenever it would sleep.

When every task is blocked and the next thing to happen is a timer, the
loop moves its clock straight to that timer instead of waiting: an hour of
batch timeouts and window closes runs in milliseconds, at exact times.

While a worker thread works for the flow, the clock does not jump: real
time passes until the thread answers. That covers aiowax's own threads,
``loop.run_in_executor`` (so ``asyncio.to_thread``) and
``anyio.to_thread.run_sync`` with anyio's default thread limiter. Threads
started any other way (a ``threading.Thread`` of your own, an executor
called directly, a limiter of your own) are not waited for: time may jump
while one runs.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio.to_thread

from aiowax._engine.clock import LoopClock, register_loop_clock

T = TypeVar("T")

#: Default wall time at the start of a virtual clock: fixed, so tests repeat.
VIRTUAL_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


class VirtualClock(LoopClock):
    """The clock of a `VirtualClockEventLoop`: wall time follows its loop time.

    It also counts aiowax's waits on worker threads, during which the loop
    lets real time pass instead of jumping (see `run_in_thread`).
    """

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        #: Worker-thread calls of aiowax in flight.
        self.threads = 0

    async def run_in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        self.threads += 1
        try:
            return await super().run_in_thread(fn, *args)
        finally:
            self.threads -= 1


class _JumpingSelector:
    def __init__(self, real: selectors.BaseSelector, loop: VirtualClockEventLoop) -> None:
        self._real = real
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        if self._threads_busy():
            # The flow waits on a worker thread (disk I/O, a blocking call):
            # let real time pass until it answers (its result wakes the
            # selector) before jumping to the next timer.
            events = self._real.select(timeout)
            if events or not self._threads_busy():
                return events
        events = self._real.select(0)
        if events or timeout is None or timeout <= 0:
            return events if events or timeout is not None else self._real.select(None)
        self._loop.advance(timeout)
        return []

    def _threads_busy(self) -> bool:
        if self._loop.clock.threads or self._loop.executor_calls:
            return True
        try:
            limiter = anyio.to_thread.current_default_thread_limiter()
        except Exception:  # pragma: no cover - no anyio context on this loop yet
            return False
        return limiter.borrowed_tokens > 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class VirtualClockEventLoop(asyncio.SelectorEventLoop):
    """A selector event loop with a virtual, auto-jumping clock.

    ``loop.time()`` starts at 0 and only moves when the loop would otherwise
    sleep until a timer: it then jumps to that timer at once. aiowax reads
    wall time on this loop as ``start`` plus the loop time, so timestamps,
    ``next_awake`` and system-clock windows jump along.

    Args:
        start: The wall time at loop time 0 (timezone-aware).
    """

    def __init__(self, start: datetime = VIRTUAL_EPOCH) -> None:
        super().__init__()
        self._virtual_time = 0.0
        #: Calls of `run_in_executor` in flight (``asyncio.to_thread`` too).
        self.executor_calls = 0
        #: The clock of every aiowax run on this loop.
        self.clock = VirtualClock(start)
        register_loop_clock(self, self.clock)
        real: selectors.BaseSelector = self._selector  # type: ignore[has-type]
        self._selector = _JumpingSelector(real, self)

    def time(self) -> float:
        return self._virtual_time

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self._virtual_time += seconds

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Callable[..., T], *args: Any
    ) -> asyncio.Future[T]:
        """As asyncio's, but the clock does not jump while the call runs."""
        future = super().run_in_executor(executor, func, *args)
        self.executor_calls += 1

        def done(_: asyncio.Future[T]) -> None:
            self.executor_calls -= 1

        future.add_done_callback(done)
        return future

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        """As asyncio's, but the clock does not jump while its thread joins the executor.

        Python 3.13's ``asyncio.Runner`` gives the join a 300 s timeout: with
        the clock jumping, that timeout fired at once (``TimeoutError`` when
        the loop closed, after any use of ``asyncio.to_thread``).
        """
        self.executor_calls += 1
        try:
            await super().shutdown_default_executor(*args, **kwargs)
        finally:
            self.executor_calls -= 1
