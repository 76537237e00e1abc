"""Running a flow from the command line, and stopping it on a signal.

`run_until_stopped` runs a `Dataflow` in the background (`aiowax.start_flow`)
until its input ends or SIGTERM or SIGINT stops it: the first signal asks the
flow's `aiowax.FlowHandle` for a graceful stop within ``--stop-timeout``, a
second one (or the timeout) aborts it. `aiowax._cli` parses the command line
and loads the flow; this module only runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from datetime import timedelta
from typing import Any

import anyio
from anyio.abc import TaskGroup

from aiowax._definition.flow import Dataflow
from aiowax._embed import FlowHandle, FlowStatus, start_flow
from aiowax._recovery.config import RecoveryConfig

#: Signals that stop the flow gracefully: SIGTERM comes from ``kill``,
#: ``docker stop`` and Kubernetes, SIGINT from Ctrl-C.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
#: What runs beside the flow until it ends (the live page's server, the
#: progress line): it gets the flow's handle and returns once the flow ended.
Companion = Callable[[FlowHandle], Coroutine[Any, Any, None]]

#: Seconds a graceful stop may take, by default: below the 30 s that
#: Kubernetes waits after SIGTERM before it sends SIGKILL, so the abort
#: (which still closes every source and sink) comes first.
DEFAULT_STOP_TIMEOUT = timedelta(seconds=25)


async def run_until_stopped(
    flow: Dataflow,
    *,
    workers: int,
    epoch_interval: timedelta | None,
    recovery_config: RecoveryConfig | None,
    stop_timeout: timedelta,
    prog: str,
    cluster: Any = None,
    companions: Sequence[Companion] = (),
) -> int:
    """Run ``flow`` until its input ends or a signal stops it; return the exit status.

    Each of ``companions`` runs beside the flow, in the same task group,
    and must return once the flow has ended.

    Raises:
        Exception: What the flow raised (also when it failed while stopping).
    """
    async with anyio.create_task_group() as tg:
        handle = await start_flow(
            tg,
            flow,
            workers=workers,
            epoch_interval=epoch_interval,
            recovery_config=recovery_config,
            propagate=False,
            cluster=cluster,
        )
        stopper = _Stopper(handle, tg, stop_timeout.total_seconds(), prog)
        with _signal_handlers(stopper.on_signal):
            # The companions finish after the flow (a server closing its
            # connections): the handlers stay until they have, so a signal
            # meanwhile is answered (ignored: the flow has ended), not fatal.
            async with anyio.create_task_group() as beside:
                for companion in companions:
                    beside.start_soon(companion, handle)
                # Waiting here also tells the handle that its failure has a
                # receiver: `aiowax._cli.main` prints it, so it is not logged.
                with contextlib.suppress(Exception):
                    await handle.wait()
    # Raised here, not in the task group, so its traceback leads from this
    # frame straight into the flow (`aiowax._cli.main` prints it from the
    # user's code on).
    await handle.wait()
    if stopper.signum is not None and handle.status is FlowStatus.CANCELLED:
        return 128 + stopper.signum
    return 0


class _Stopper:
    """What SIGTERM and SIGINT do: a graceful stop, then an abort."""

    def __init__(self, handle: FlowHandle, helpers: TaskGroup, timeout: float, prog: str) -> None:
        self._handle = handle
        self._helpers = helpers
        self._timeout = timeout
        self._prog = prog
        #: The signal that asked for the stop, once one did.
        self.signum: int | None = None
        self._aborting = False

    def on_signal(self, signum: int) -> None:
        """Start the graceful stop on a first signal, abort on a second one."""
        if self._handle.done:
            return
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            self._say(
                f"{name} received: stopping gracefully (at most {self._timeout:g} s; "
                "a second signal aborts at once)"
            )
            self._helpers.start_soon(self._stop)
        elif not self._aborting:
            self._aborting = True
            self._say(f"{name} received while stopping: aborting, without a final snapshot")
            self._helpers.start_soon(self._handle.abort)

    async def _stop(self) -> None:
        try:
            await self._handle.stop(timeout=self._timeout)
        except TimeoutError as exc:
            if exc is self._handle.error:
                return  # the flow's own error: raised by the caller
            if not self._aborting:
                self._say(
                    f"the flow did not stop within {self._timeout:g} s: aborted, "
                    "without a final snapshot"
                )
        except Exception:
            return  # the flow failed: `run_until_stopped` raises it

    def _say(self, message: str) -> None:
        print(f"{self._prog}: {message}", file=sys.stderr, flush=True)


_at_fork_registered = False
#: The signals `_signal_handlers` has the loop handle, while it does.
_handled: set[signal.Signals] = set()
#: Each forking thread's signal mask from before the fork (see `_before_fork`).
_masks = threading.local()


def _forget_wakeup_fd_in_forked_children() -> None:
    """Have a child forked by the flow drop the loop's signal wakeup fd and handlers.

    The loop hears of a signal through that fd, which a fork copies: a
    child a step forks (a ``multiprocessing`` pool with the fork start
    method) would write its own signals into the parent's loop, so Ctrl-C,
    which signals the whole process group, would reach it twice and turn
    the graceful stop into an abort. The child also gets Python's default
    handlers back: with the loop's, which only write to that fd, it ignored
    SIGTERM, so ``Pool.terminate()`` could not end it and the process hung
    at exit joining it. The signals are blocked across the fork, so that
    one the child gets before this is done waits for it instead of reaching
    the parent's loop. Registered once per process.
    """
    global _at_fork_registered
    if not _at_fork_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(
            before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork_in_child
        )
        _at_fork_registered = True


def _before_fork() -> None:
    _masks.saved = None
    if _handled and hasattr(signal, "pthread_sigmask"):
        _masks.saved = signal.pthread_sigmask(signal.SIG_BLOCK, _handled)


def _after_fork() -> None:
    saved = getattr(_masks, "saved", None)
    if saved is not None:
        _masks.saved = None
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)


def _after_fork_in_child() -> None:
    with contextlib.suppress(ValueError):  # not the main thread: nothing to drop
        signal.set_wakeup_fd(-1)
        for signum in _handled:
            # Python's own defaults: the handlers before the loop's belong to
            # the parent's run (asyncio.Runner's cancels its main task).
            default = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
            signal.signal(signum, default)
    _after_fork()


@contextlib.contextmanager
def _signal_handlers(callback: Callable[[int], None]) -> Iterator[None]:
    """Call ``callback(signum)`` on the event loop for each of `STOP_SIGNALS`.

    Where the loop cannot handle signals (Windows, or not the main thread),
    Ctrl-C stays a `KeyboardInterrupt`. The previous handlers come back after.
    """
    loop = asyncio.get_running_loop()
    _forget_wakeup_fd_in_forked_children()
    previous: dict[signal.Signals, Any] = {}
    for signum in STOP_SIGNALS:
        handler = signal.getsignal(signum)
        try:
            loop.add_signal_handler(signum, callback, signum)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        previous[signum] = handler
    _handled.update(previous)
    try:
        yield
    finally:
        _handled.clear()
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            # The loop restores the default, which may not be what was there
            # (asyncio.Runner's own SIGINT handler, a test runner's...).
            if handler is not None:
                signal.signal(signum, handler)
