"""A stateless step's sync function run in worker processes (``processes=``).

`ProcessPool` belongs to one operator (one step on one worker) for one run:
``start`` launches the processes and checks that the function loads in
them, `apply` runs a batch, ``aclose`` stops them. A run with ``workers=N``
has N pools per such step: each operator owns its own, so nothing is shared
between the tasks of the run, and a pool's lifetime is its operator's.

A batch is cut into at most ``processes`` chunks of at least `MIN_CHUNK`
items, each pickled once and sent whole: one round trip per chunk, not per
item, so the cost of crossing processes stays small next to CPU-heavy work.
The chunks' outputs are joined in order. A failure reports the output of
the items before the failing one, as the in-process operators do.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import pairwise
from typing import Any

import anyio
import anyio.to_thread

from aiowax._checks import describe
from aiowax._engine.aio import wait_future
from aiowax._engine.errors import StepFailed
from aiowax._engine.ops.base import Operator
from aiowax._engine.ops.process_child import Failure, install, loaded, run_chunk

#: Fewest items in a chunk: below this a batch goes in fewer chunks than
#: there are processes, so a trickle of small batches does not pay a round
#: trip (about 0.26 ms, measured) for every item or two.
MIN_CHUNK = 16

#: Seconds a worker process gets to exit once stopped before it is killed.
EXIT_GRACE = 5.0

# "spawn": a process started from scratch, which imports what it needs.
# "fork" copies a process that runs an event loop and threads (anyio's worker
# threads, the pool's own, the user's): a lock held by another thread at
# that moment stays held in the child forever (Python 3.12 warns, 3.14
# no longer forks by default). "forkserver" is as safe, but it is a server
# process shared by the whole program and it outlives the run; its children
# still import the function's module, so it was barely faster: 117-148 ms
# against 138-155 ms for spawn to the first results of 2 processes, whose
# function's module imports aiowax (docs/parallel.md).
_START_METHOD = "spawn"


class ChildTraceback(Exception):
    """The traceback of an exception raised in a worker process, as text.

    Set as the ``__cause__`` of the exception the parent raises (a pickled
    exception loses its traceback), as `concurrent.futures` does.
    """

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


class ProcessPool:
    """Runs an operator's sync user function in ``processes`` worker processes."""

    def __init__(self, op: Operator, fn: Callable[[Any], Any], processes: int, flat: bool) -> None:
        self.op = op
        self.fn = fn
        self.processes = processes
        #: Flatten the function's results (``flat_map``).
        self.flat = flat
        #: What the role calls the function: "mapper", "predicate".
        self.name = op.role.rsplit(" ", 1)[-1]
        self.where = f"{op.step.kind} step {op.step_id!r}"
        self.executor: ProcessPoolExecutor | None = None
        #: The chunks of the last batch (or the start-up probes): any still
        #: running when the pool is closed is stopped at once.
        self.in_flight: list[Future[Any]] = []

    async def start(self) -> None:
        """Start the processes and wait until each has loaded the function.

        Raises:
            StepFailed: The function does not pickle here, or does not
                unpickle in a worker process (a function defined in an
                interactive session, say).
        """
        try:
            fn_bytes = pickle.dumps(self.fn, pickle.HIGHEST_PROTOCOL)
        except Exception as error:
            msg = (
                f"{self.where}: processes={self.processes} sends the {self.name} to worker "
                f"processes by pickling it, and {describe(self.fn)} does not pickle "
                f"({type(error).__name__}: {error}); use a function defined at the top "
                "level of a module, or an object of a module-level class"
            )
            raise StepFailed(_caused(TypeError(msg), error)) from None
        # In a thread: starting a process writes the pickled function to it,
        # which blocks until it has read it when the function is large.
        probes = await anyio.to_thread.run_sync(self._launch, fn_bytes)
        self.in_flight = list(probes)
        for probe in probes:
            try:
                failure: Failure | None = await wait_future(probe)
            except BrokenProcessPool as error:
                msg = (
                    f"{self.where}: a worker process of processes={self.processes} ended "
                    f"while starting, before it loaded the {self.name} (its traceback, if "
                    "any, is on stderr). The usual cause: the script runs its flow outside "
                    "an 'if __name__ == \"__main__\":' block, and each worker process "
                    "imports the script's __main__ module again"
                )
                raise StepFailed(_caused(RuntimeError(msg), error)) from None
            if failure is not None:
                cause = _with_child_traceback(failure)
                msg = (
                    f"{self.where}: the worker processes could not load the {self.name} "
                    f"{describe(self.fn)} ({type(cause).__name__}: {cause}); with "
                    "processes=, it must be importable by a fresh interpreter: define it "
                    "in a module, not in __main__ of an interactive session"
                )
                raise StepFailed(_caused(RuntimeError(msg), cause))

    def _launch(self, fn_bytes: bytes) -> list[Future[Failure | None]]:
        self.executor = ProcessPoolExecutor(
            self.processes,
            mp_context=multiprocessing.get_context(_START_METHOD),
            initializer=install,
            initargs=(fn_bytes, os.getpid()),
        )
        # The pool starts a process for each task submitted while none is
        # idle: one probe each starts them all now, not on the first batch.
        return [self.executor.submit(loaded) for _ in range(self.processes)]

    async def apply(self, batch: list[Any], finish: Callable[[list[Any]], list[Any]]) -> list[Any]:
        """The output batch: ``finish`` of the function's results over ``batch``.

        Raises:
            StepFailed: The function failed on an item (with the user's
                exception and the step's note), or an item or a result did
                not pickle, or a worker process died; ``partial`` is
                ``finish`` of the results of the items before it.
        """
        results: list[Any] = []
        failed = await self._run(batch, results) if batch else None
        if failed is None:
            return finish(results)
        error, by_user = failed
        if by_user:
            raise self.op.fail(error, finish(results))
        raise StepFailed(error, finish(results))

    async def _run(self, batch: list[Any], results: list[Any]) -> tuple[BaseException, bool] | None:
        """Add the results of ``batch`` to ``results``; return the failure, if any.

        A failure is ``(error, raised by the user's function)``; ``results``
        then holds the results of the items before the failing one.
        """
        bounds = chunk_bounds(len(batch), self.processes)
        payloads: list[bytes] = []
        for start, end in pairwise(bounds):
            try:
                payloads.append(pickle.dumps(batch[start:end], pickle.HIGHEST_PROTOCOL))
            except Exception:
                return await self._unpicklable(batch, start, end, results)
        executor = self.executor
        assert executor is not None, "apply before start"
        futures = [executor.submit(run_chunk, self.flat, payload) for payload in payloads]
        self.in_flight = futures
        try:
            for start, future in zip(bounds, futures, strict=False):
                try:
                    data: bytes = await wait_future(future)
                except BrokenProcessPool as error:
                    msg = (
                        f"{self.where}: a worker process ended abruptly (killed, out of "
                        f"memory, or it crashed) while running the {self.name}"
                    )
                    return _caused(RuntimeError(msg), error), False
                try:
                    out, failure = pickle.loads(data)
                except Exception as error:
                    # They pickled there: a class this process cannot import, say.
                    msg = f"{self.where}: the {self.name}'s results do not unpickle here"
                    return _caused(TypeError(msg), error), False
                results.extend(out)
                if failure is not None:
                    return self._failure(failure, batch[start + failure.at])
            return None
        finally:
            # After a failure the later chunks are not needed: those not
            # started never will be; aclose stops those that have.
            for future in futures:
                future.cancel()

    async def _unpicklable(
        self, batch: list[Any], start: int, end: int, results: list[Any]
    ) -> tuple[BaseException, bool]:
        """The chunk ``batch[start:end]`` does not pickle: run the items before the culprit."""
        bad, reason = start, "the chunk does not pickle"
        for i in range(start, end):
            try:
                pickle.dumps(batch[i], pickle.HIGHEST_PROTOCOL)
            except Exception as error:
                bad, reason = i, f"{type(error).__name__}: {error}"
                break
        # The items before it are processed first: their output comes before
        # the failure, as if the function had failed on the culprit.
        if bad:
            earlier = await self._run(batch[:bad], results)
            if earlier is not None:
                return earlier
        msg = (
            f"{self.where}: item {describe(batch[bad])} cannot be pickled to go to the "
            f"worker processes ({reason})"
        )
        return TypeError(msg), False

    def _failure(self, failure: Failure, item: Any) -> tuple[BaseException, bool]:
        """The error for what went wrong in a worker process on ``item``."""
        if failure.what == "raised":
            return _with_child_traceback(failure), True
        if failure.what == "stopped":
            text = f"{self.op.role} raised StopIteration on item {describe(item)}"
            return RuntimeError(text), True
        if failure.what == "awaitable":
            msg = (
                f"{self.where}: the {self.name} returned an awaitable ({failure.detail}) "
                f"for item {describe(item)}; with processes= it must return plain values "
                "(a coroutine cannot cross processes): declare it async and drop processes="
            )
            return TypeError(msg), False
        if failure.what == "result":
            msg = (
                f"{self.where}: the {self.name}'s result for item {describe(item)} cannot "
                f"be pickled to come back from its worker process ({failure.detail})"
            )
            return TypeError(msg), False
        error = _with_child_traceback(failure)
        msg = f"{self.where}: the worker processes could not load the {self.name}"
        return _caused(RuntimeError(msg), error), False

    async def aclose(self) -> None:
        """Stop the processes, at once if a chunk is still running; never raises."""
        executor, self.executor = self.executor, None
        if executor is None:
            return
        busy = any(not future.done() for future in self.in_flight)
        self.in_flight = []
        # Shielded: the step may be closing because the run is cancelled,
        # and the processes must be gone before aclose returns.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(_shut_down, executor, busy)


def chunk_bounds(n: int, processes: int) -> list[int]:
    """Where a batch of ``n`` items is cut: chunk ``i`` is ``[bounds[i]:bounds[i + 1]]``.

    As many chunks as processes, of nearly equal sizes, unless that would
    make them smaller than `MIN_CHUNK`; always one chunk at least.
    """
    count = max(1, min(processes, n // MIN_CHUNK))
    return [n * i // count for i in range(count + 1)]


def _shut_down(executor: ProcessPoolExecutor, busy: bool) -> None:
    """Stop ``executor``'s processes and wait until they have exited (in a thread)."""
    # Private, but there since Python 3.2; `terminate_workers` (3.14) is the
    # public way to stop a process in the middle of a task.
    processes = list((getattr(executor, "_processes", None) or {}).values())
    if busy:
        # A chunk may run for long (or forever): the run has ended, and a
        # stateless function's work is not wanted any more.
        for process in processes:
            process.terminate()
    executor.shutdown(wait=True, cancel_futures=True)
    for process in processes:
        process.join(EXIT_GRACE)
        if process.is_alive():
            process.kill()
            process.join()


def _with_child_traceback(failure: Failure) -> BaseException:
    error = failure.error
    assert error is not None
    if failure.detail:
        error.__cause__ = ChildTraceback(failure.detail)
    return error


def _caused(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error
