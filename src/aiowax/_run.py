"""The entry points that run a flow: `run` (async) and `run_main` (sync)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any

from aiowax._definition.flow import Dataflow
from aiowax._engine.driver import check_options, flow_name, run_flow
from aiowax._stats.collect import StatsCallback, run_reporting


async def run(
    flow: Dataflow,
    *,
    workers: int = 1,
    epoch_interval: timedelta | None = None,
    recovery_config: Any = None,
    cluster: Any = None,
    on_stats: StatsCallback | None = None,
    stats_interval: float | timedelta = 1.0,
) -> None:
    """Run ``flow`` in the running event loop until its input ends.

    Works under asyncio and uvloop. Cancelling the task that awaits it stops
    the flow at once and closes every source and sink partition.

    Args:
        flow: The dataflow to run.
        workers: Workers to run in this process, as concurrent task sets.
        epoch_interval: Time between epoch ends (default 10 s);
            ``timedelta(0)`` makes every input batch its own epoch.
        recovery_config: An `aiowax.recovery.RecoveryConfig`: snapshot every
            epoch and resume from the last one every worker finished.
        cluster: An `aiowax.cluster.KafkaCluster`: run as one copy of an
            application whose copies share the work through Kafka (keyed
            state in changelog topics, not ``recovery_config``); the run
            lasts until it is stopped or cancelled. See docs/scale-out.md.
        on_stats: Called with an `aiowax.stats.FlowStats` every
            ``stats_interval`` while the flow runs, and once more when it
            has ended (status ``"finished"``, ``"failed"`` or
            ``"cancelled"``); may be ``async def``. A slow callback delays
            only its next call, never the flow.
        stats_interval: Seconds (or a timedelta) between ``on_stats`` calls.

    Raises:
        Exception: The first exception raised by user code in a step, with
            its original type and traceback, and a note naming the step.
        FlowDefinitionError: The flow has no input, no output, or a step
            before its first input.
    """
    if on_stats is not None:
        if not callable(on_stats):
            msg = f"run: on_stats must be callable, got {on_stats!r}"
            raise TypeError(msg)
        interval = _seconds(stats_interval)

        async def reported(on_start: Callable[[Any], None]) -> None:
            await _run(flow, workers, epoch_interval, recovery_config, cluster, on_start)

        await run_reporting(flow_name(flow), reported, on_stats, interval)
        return
    await _run(flow, workers, epoch_interval, recovery_config, cluster, None)


def _seconds(value: object) -> float:
    """``stats_interval`` in seconds: a positive number or timedelta."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        msg = f"run: stats_interval must be seconds or a timedelta, got {value!r}"
        raise TypeError(msg)
    if not seconds > 0 or seconds == float("inf"):
        msg = f"run: stats_interval must be a positive, finite time, got {value!r}"
        raise ValueError(msg)
    return seconds


async def _run(
    flow: Dataflow,
    workers: int,
    epoch_interval: timedelta | None,
    recovery_config: Any,
    cluster: Any,
    on_start: Callable[[Any], None] | None,
) -> None:
    if cluster is not None:
        check_options("run", workers, epoch_interval, recovery_config, cluster)
        from aiowax._cluster.runtime import run_cluster

        await run_cluster(
            flow, cluster, workers=workers, epoch_interval=epoch_interval, on_start=on_start
        )
        return
    await run_flow(
        flow,
        workers=workers,
        epoch_interval=epoch_interval,
        recovery_config=recovery_config,
        on_start=on_start,
    )


def run_sync(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on a new event loop: uvloop when installed."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        main.close()
        msg = (
            "run_main cannot be called from a running event loop; "
            "use 'await aiowax.run(flow)' there instead"
        )
        raise RuntimeError(msg)
    # The objects alive now (modules, classes, the flow's definition) live as
    # long as the run: frozen, the collector's full passes during the run do
    # not rescan them. Unfrozen after, so the process is left as it was.
    # An application that froze objects itself (before forking, say) keeps
    # its freeze: only a freeze this run made is undone.
    froze = not gc.get_freeze_count()
    if froze:
        gc.freeze()
    try:
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
            asyncio.run(main)
        else:
            uvloop.run(main)
    finally:
        if froze:
            gc.unfreeze()
