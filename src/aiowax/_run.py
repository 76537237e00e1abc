"""The entry points that run a flow: `run` (async) and `run_main` (sync)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

from aiowax._definition.flow import Dataflow
from aiowax._engine.driver import run_flow


async def run(
    flow: Dataflow,
    *,
    workers: int = 1,
    epoch_interval: timedelta | None = None,
    recovery_config: Any = None,
    cluster: Any = None,
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

    Raises:
        Exception: The first exception raised by user code in a step, with
            its original type and traceback, and a note naming the step.
        FlowDefinitionError: The flow has no input, no output, or a step
            before its first input.
    """
    if cluster is not None:
        if recovery_config is not None:
            msg = "run: cluster mode keeps its state in Kafka; recovery_config must be None"
            raise ValueError(msg)
        from aiowax._cluster.runtime import run_cluster

        await run_cluster(flow, cluster, workers=workers, epoch_interval=epoch_interval)
        return
    await run_flow(
        flow, workers=workers, epoch_interval=epoch_interval, recovery_config=recovery_config
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
