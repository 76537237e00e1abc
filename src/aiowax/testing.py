"""Running flows from synchronous code, and in-memory sources and sinks.

`run_main` and `cluster_main` run a flow on a fresh event loop (uvloop when
installed); `TestingSource` and `TestingSink` feed and collect it in memory
(Bytewax 0.17.2 called them `TestingInput` and `TestingOutput`; both names
work).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from typing import Any, TypeVar

from aiowax._compat.adapt import next_batch_of as _next_batch_of
from aiowax._compat.testing import TestingInput, TestingOutput
from aiowax._definition import steps as _steps
from aiowax._definition.flow import Dataflow
from aiowax._definition.inputs import StatefulSourcePartition, StatelessSourcePartition
from aiowax._run import run, run_sync
from aiowax._testing.sources import TestingSink, TestingSource
from aiowax._util import fixup_module_metadata

# Bytewax 0.17.2's ``bytewax.testing`` has ``batch`` too (imported there from
# its inputs): ``from bytewax.testing import batch`` keeps working migrated.
from aiowax.inputs import batch as batch

__all__ = [
    "TestingInput",
    "TestingOutput",
    "TestingSink",
    "TestingSource",
    "cluster_main",
    "ffwd_iter",
    "poll_next_batch",
    "run_main",
    "run_with",
]

T = TypeVar("T")


def run_main(
    flow: Dataflow,
    *,
    epoch_interval: timedelta | None = None,
    recovery_config: Any = None,
) -> None:
    """Run ``flow`` with one worker until its input ends; block meanwhile.

    Raises the first exception of a user function, with a note naming the
    step. Cannot be called from inside a running event loop: there, use
    ``await aiowax.run(flow)``.
    """
    run_sync(run(flow, epoch_interval=epoch_interval, recovery_config=recovery_config))


def cluster_main(
    flow: Dataflow,
    addresses: list[str],
    proc_id: int,
    *,
    epoch_interval: timedelta | None = None,
    recovery_config: Any = None,
    worker_count_per_proc: int = 1,
) -> None:
    """Run ``flow`` with ``worker_count_per_proc`` workers in this process.

    Args:
        flow: The dataflow.
        addresses: Must be empty: Bytewax's cluster of processes has no
            counterpart; processes share a flow through Kafka instead
            (`aiowax.cluster.KafkaCluster`).
        proc_id: Must be 0.
        epoch_interval: As for `run_main`.
        recovery_config: As for `run_main`.
        worker_count_per_proc: Workers, as concurrent task sets on one loop.
    """
    if addresses:
        msg = (
            "cluster_main: addresses is Bytewax's cluster of processes, which aiowax "
            "does not have (pass addresses=[]). More workers in this process: raise "
            "worker_count_per_proc. Several processes or machines share a flow through "
            "Kafka consumer groups instead: aiowax.run(flow, cluster=KafkaCluster("
            "brokers, app_id)) or python -m aiowax --kafka-cluster HOST:PORT --app-id "
            "NAME (docs/scale-out.md)"
        )
        raise NotImplementedError(msg)
    if proc_id != 0:
        msg = f"proc_id must be 0 in a single-process execution, got {proc_id!r}"
        raise ValueError(msg)
    run_sync(
        run(
            flow,
            workers=worker_count_per_proc,
            epoch_interval=epoch_interval,
            recovery_config=recovery_config,
        )
    )


async def run_with(
    flow: Dataflow,
    inputs: Mapping[str, Iterable[Any]],
    *,
    outputs: Iterable[str] | None = None,
    batch_size: int = 1,
    workers: int = 1,
    epoch_interval: timedelta | None = None,
) -> dict[str, list[Any]]:
    """Run ``flow`` on in-memory inputs and return what its outputs received.

    The flow is copied with the sources of the named input steps replaced by
    `TestingSource` over the given items, and the sinks of its output steps
    replaced by lists; the flow you pass is left untouched, so a test runs
    the very definition production uses.

    >>> import anyio
    >>> from aiowax.connectors.stdio import StdOutSink
    >>> flow = Dataflow()
    >>> flow.input("numbers", TestingSource([]))   # production: a real source
    >>> flow.map("double", lambda x: 2 * x)
    >>> flow.output("out", StdOutSink())           # production: a real sink
    >>> anyio.run(run_with, flow, {"numbers": [1, 2, 3]})
    {'out': [2, 4, 6]}

    Args:
        flow: The flow to test.
        inputs: Items for each input step to replace, by step id.
        outputs: The output steps to capture (default: all of them).
        batch_size: Batch size of the replacement sources.
        workers: As for `aiowax.run`.
        epoch_interval: As for `aiowax.run`.

    Returns:
        The items each captured output step received, by step id.

    Raises:
        ValueError: A step id names no input (or output) step of the flow.
    """
    input_ids = {s.step_id for s in flow.steps if isinstance(s, _steps.InputStep)}
    output_ids = [s.step_id for s in flow.steps if isinstance(s, _steps.OutputStep)]
    for step_id in inputs:
        if step_id not in input_ids:
            msg = f"run_with: the flow has no input step {step_id!r}"
            raise ValueError(msg)
    wanted = output_ids if outputs is None else list(outputs)
    for step_id in wanted:
        if step_id not in output_ids:
            msg = f"run_with: the flow has no output step {step_id!r}"
            raise ValueError(msg)
    captured: dict[str, list[Any]] = {step_id: [] for step_id in wanted}
    replaced: dict[str, dict[str, Any]] = {
        step_id: {"source": TestingSource(items, batch_size)} for step_id, items in inputs.items()
    }
    replaced.update({step_id: {"sink": TestingSink(out)} for step_id, out in captured.items()})
    await run(
        flow._with_fields(replaced),
        workers=workers,
        epoch_interval=epoch_interval,
    )
    return captured


def ffwd_iter(it: Iterator[T], n: int) -> Iterator[T]:
    """Skip the first ``n`` items of ``it`` and return it."""
    for _ in range(n):
        next(it, None)
    return it


def poll_next_batch(
    part: StatefulSourcePartition[Any, Any] | StatelessSourcePartition[Any],
    timeout: timedelta = timedelta(seconds=5),
) -> list[Any]:
    """Call a sync partition's ``next_batch`` until it returns items.

    A Bytewax 0.17.2 partition's ``next_batch()``, without ``sched``, works too.

    Raises:
        TimeoutError: Nothing came within ``timeout``.
        TypeError: ``next_batch`` is ``async def``; await it directly instead.
    """
    deadline = time.monotonic() + timeout.total_seconds()
    next_batch = _next_batch_of(part)
    while True:
        batch = next_batch(None)
        if inspect.isawaitable(batch):
            close = getattr(batch, "close", None)
            if close is not None:
                close()
            msg = "poll_next_batch needs a sync next_batch; await the async one directly"
            raise TypeError(msg)
        if batch:
            return list(batch)
        if time.monotonic() >= deadline:
            msg = f"no items within {timeout}"
            raise TimeoutError(msg)
        time.sleep(0.001)


fixup_module_metadata(__name__, __all__, globals())
