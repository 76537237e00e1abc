"""The few asyncio-specific primitives of aiowax, kept in one place.

aiowax is written against anyio (task groups, cancel scopes, memory
streams, events). A handful of hot or subtle spots need asyncio itself,
because anyio's portable versions cost a checkpoint or an object per call,
or cannot say what is needed; each is here, with the reason, so the rest
of the package stays backend-neutral and a port to another backend knows
exactly what to replace.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

#: asyncio's cancellation exception (what anyio cancels with on asyncio).
CancelledError = asyncio.CancelledError


class Doorbell:
    """Wakes one idle waiter when something happened (a channel was sent to).

    A bare future: waking a receiver this way skips the checkpoint and the
    event object of anyio's ``receive``, which are most of a hop's latency.
    """

    __slots__ = ("waiter",)

    def __init__(self) -> None:
        self.waiter: asyncio.Future[None] | None = None

    def ring(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Wait until the bell rings (one waiter at a time)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiter = waiter
        try:
            await waiter
        finally:
            self.waiter = None


async def yield_now() -> None:
    """Let other tasks run; cheaper than anyio's checkpoint on a hot path."""
    await asyncio.sleep(0)


def loop_time_function() -> Any:
    """The running loop's own ``time`` method, or None outside a loop.

    Hot loops read the time once per batch; the bound method skips anyio's
    backend lookup on every call.
    """
    try:
        return asyncio.get_running_loop().time
    except RuntimeError:
        return None


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The running event loop, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def require_asyncio(where: str) -> None:
    """Refuse to run anywhere but on an asyncio event loop (asyncio's own, or uvloop).

    anyio would start a run under trio too, and it would fail at random in
    a step's code (the engine calls asyncio), blamed on the user's sink.

    Raises:
        RuntimeError: No asyncio event loop runs in this thread.
    """
    if running_loop() is None:
        msg = (
            f"{where}: aiowax runs on an asyncio event loop (asyncio or uvloop), and none "
            "runs here (trio, say): start it with asyncio.run(...), uvloop.run(...) or "
            "anyio.run(..., backend='asyncio')"
        )
        raise RuntimeError(msg)


def call_on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], T], timeout: float) -> T:
    """Run ``fn()`` on ``loop``'s thread, from another thread, and return its result.

    Raises:
        TimeoutError: The loop did not run it within ``timeout`` seconds.
        Exception: What ``fn`` raised.
    """
    done: concurrent.futures.Future[T] = concurrent.futures.Future()

    def call() -> None:
        if not done.set_running_or_notify_cancel():
            return
        try:
            done.set_result(fn())
        except BaseException as error:
            done.set_exception(error)

    loop.call_soon_threadsafe(call)
    try:
        return done.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        done.cancel()
        raise TimeoutError(f"the event loop did not answer within {timeout:g} s") from None


class Suspended:
    """A coroutine that `run_until_suspended` started and that now waits.

    Awaiting this, in the task that started it, goes on where the coroutine
    stopped: what it waits on goes to the task as if it had been awaited all
    along, and what the loop sends or throws back (a cancellation) goes on to
    it. A plain ``yield from`` cannot take over a coroutine already started.
    """

    __slots__ = ("coro", "yielded")

    def __init__(self, coro: Coroutine[Any, Any, Any], yielded: Any) -> None:
        self.coro = coro
        self.yielded = yielded

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, yielded = self.coro, self.yielded
        while True:
            try:
                sent = yield yielded
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as error:
                try:
                    yielded = coro.throw(error)
                except StopIteration as done:
                    return done.value
            else:
                try:
                    yielded = coro.send(sent)
                except StopIteration as done:
                    return done.value


def run_until_suspended(coro: Coroutine[Any, Any, T]) -> T | Suspended:
    """Run ``coro`` in the calling task until it first waits.

    Returns:
        Its result if it finished without waiting (a queue with a backlog,
        a buffered socket), else a `Suspended` to await for the rest.

    Raises:
        BaseException: What the coroutine raised before it first waited.
    """
    try:
        yielded = coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    return Suspended(coro, yielded)


def raise_if_cancelled(error: BaseException) -> None:
    """Raise ``error`` again if it is a real cancellation of the running task.

    Anything else user code raised, a `asyncio.CancelledError` included
    (sync code cannot be cancelled by the loop), is the step's failure.
    """
    if isinstance(error, asyncio.CancelledError):
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise error


async def user_await(awaitable: Awaitable[T]) -> T:
    """Await user code, telling a real cancellation from a stray one.

    A user coroutine that raises `asyncio.CancelledError` while nobody is
    cancelling the task would otherwise pass for a cancellation of the
    step, and the step would end as if its input had: a silent loss. Only
    asyncio can say whether the task is being cancelled.
    """
    try:
        return await awaitable
    except asyncio.CancelledError as error:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        msg = "raised CancelledError while nothing was cancelling it"
        raise RuntimeError(msg) from error


async def wait_future(future: concurrent.futures.Future[T]) -> T:
    """Await a `concurrent.futures.Future` (a process pool's) from the loop.

    anyio has no portable way to wait for one without a thread per wait;
    asyncio chains it to a loop future, and cancelling the wait cancels
    ``future`` too if it has not started yet.
    """
    return await asyncio.wrap_future(future)


#: What a read returns once its iterator has ended.
END: Any = object()


async def next_or_end(it: AsyncIterator[Any]) -> Any:
    """The next item of ``it``, or `END` once it is exhausted."""
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return END


class PendingRead:
    """One read of an async iterator (``read``, e.g. `next_or_end`), run as its own task.

    Cancelling ``__anext__`` (on a timeout, or a graceful stop) could lose
    the item it was about to return; run as a task, the read can be waited
    on with a timeout and picked up later, and is only cancelled when the
    iterator is being abandoned anyway.
    """

    def __init__(self, read: Coroutine[Any, Any, Any]) -> None:
        self._task = asyncio.ensure_future(read)

    async def get(self, timeout: float | None) -> tuple[bool, Any]:
        """Wait at most ``timeout`` seconds for the read.

        Returns:
            ``(False, None)`` on timeout; else ``(True, what the read returned)``.
        """
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            return False, None
        return True, self._task.result()

    async def cancel(self) -> None:
        """Stop the read and wait until it has stopped (shielded).

        What it raised meanwhile is dropped: the iterator is being abandoned.
        """
        task = self._task
        task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.wait({task})
        if not task.cancelled():
            task.exception()
