"""One copy of a cluster: the front flow, and a generation per assignment.

`run_cluster` plans the flow (`topology`), creates or checks the internal
topics (`topics`), joins the group (`group`), starts the front flow (the
`DynamicSource` pipelines, read by every copy) and then, for each
assignment Kafka makes, runs a generation: the flow limited to the assigned
partitions, restored from the changelogs and the group's offsets
(`store`), until Kafka revokes the assignment or the copy is stopped. A
revocation stops the generation gracefully (its final snapshot is
committed: states, markers, offsets), then lets the rebalance go on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from aiowax._cluster.config import KafkaCluster
from aiowax._cluster.group import GroupMember, PartitionsLost
from aiowax._cluster.store import KafkaStore
from aiowax._cluster.topics import check_topics, prepare_topics
from aiowax._cluster.topology import Topology
from aiowax._engine.aio import require_asyncio
from aiowax._engine.clock import run_in_thread
from aiowax._engine.context import RunContext
from aiowax._engine.driver import check_run_args, flow_name, run_pipelines
from aiowax._engine.edges import run_edges
from aiowax._engine.errors import lone_error
from aiowax._engine.plan import compile_flow
from aiowax._errors import ClusterError
from aiowax._observe import span
from aiowax._recovery.config import RecoveryConfig
from aiowax._recovery.runtime import Recovery

logger = logging.getLogger("aiowax")


@dataclass
class ClusterRun:
    """What a `FlowHandle` holds of a running copy: how to ask it to stop."""

    stopping: bool = False
    #: A new assignment's state is being read from the changelogs.
    restoring: bool = False
    runs: list[RunContext] = field(default_factory=list)
    #: The run of the current generation (or the last one), among ``runs``.
    generation: RunContext | None = None
    wake: anyio.Event = field(default_factory=anyio.Event)

    def request_stop(self) -> None:
        """Stop gracefully: every run commits and ends, then the copy leaves the group."""
        self.stopping = True
        for ctx in self.runs:
            ctx.request_stop()
        self.wake.set()


async def run_cluster(
    flow: Any,
    cluster: KafkaCluster,
    *,
    workers: int = 1,
    epoch_interval: Any = None,
    on_start: Callable[[ClusterRun], None] | None = None,
) -> None:
    """Run ``flow`` as one copy of the application ``cluster.app_id`` (see `aiowax.run`)."""
    require_asyncio("run")
    if not isinstance(cluster, KafkaCluster):
        msg = f"run: cluster must be an aiowax.cluster.KafkaCluster, got {cluster!r}"
        raise TypeError(msg)
    interval = check_run_args(workers, epoch_interval, None)
    pipelines = compile_flow(flow)
    if workers != 1:
        msg = (
            f"cluster mode runs one worker per copy (got workers={workers}); start more "
            "copies instead (python -m aiowax FLOW --kafka-cluster ... -p N)"
        )
        raise ClusterError(msg)
    with run_edges(pipelines):
        try:
            await _run_copy(flow, cluster, interval, on_start)
        except BaseExceptionGroup as group:
            # The copy's task groups nest (membership, front flow,
            # generations): its caller gets the error, as without cluster mode.
            lone = lone_error(group)
            if lone is group:
                raise
            raise lone from None


async def _run_copy(
    flow: Any,
    cluster: KafkaCluster,
    interval: float,
    on_start: Callable[[ClusterRun], None] | None,
) -> None:
    try:
        topology = await run_in_thread(prepare_topics, flow, cluster)
    except ClusterError as refused:
        refused.before_run = True  # the command line says it in one line
        raise
    member = GroupMember(topology)
    control = ClusterRun()
    if on_start is not None:
        on_start(control)
    async with anyio.create_task_group() as tg:
        tg.start_soon(member.run, name=f"aiowax group {cluster.app_id}")
        try:
            async with anyio.create_task_group() as work:
                front = topology.front_flow()
                if front is not None:
                    work.start_soon(_run_front, front, interval, control)
                await _generations(topology, member, control, interval)
                # Stopped: the front flow ends too.
                control.request_stop()
        finally:
            member.close()


async def _run_front(flow: Any, interval: float, control: ClusterRun) -> None:
    await run_pipelines(
        compile_flow(flow),
        workers=1,
        interval=interval,
        recovery=None,
        on_start=lambda ctx: _attach(control, ctx),
        name=flow_name(flow),
    )


def _attach(control: ClusterRun, ctx: RunContext) -> None:
    control.runs.append(ctx)
    if control.stopping:
        ctx.request_stop()


async def _wait_or_stop(event: anyio.Event, control: ClusterRun) -> None:
    """Wait for ``event``, or until the copy is asked to stop."""
    async with anyio.create_task_group() as tg:

        async def on_stop() -> None:
            await control.wake.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(on_stop)
        await event.wait()
        tg.cancel_scope.cancel()


#: A copy waiting longer than this for the group's next assignment says so
#: (and again each time as long), beyond the session and revoke timeouts,
#: which a rebalance may take: the copy does no work meanwhile.
ASSIGNMENT_PATIENCE_S = 60.0


async def wait_for_assignment(
    ready: Callable[[], anyio.Event], control: ClusterRun, cluster: KafkaCluster
) -> None:
    """Wait for ``ready()`` (the group's next assignment) or a stop, warning when long.

    A rebalance takes seconds. A copy that hears nothing for longer is
    either waiting for a member slow to give its partitions up, or in a
    group its coordinator no longer assigns (Tansu 0.6 does so for good
    once every member left during a rebalance): without a word, it would
    look like an idle copy.
    """
    patience = max(
        ASSIGNMENT_PATIENCE_S,
        (cluster.session_timeout + cluster.revoke_timeout).total_seconds() + 20.0,
    )
    waited = 0.0
    while not control.stopping:
        with anyio.move_on_after(patience):
            await _wait_or_stop(ready(), control)
            return
        waited += patience
        logger.warning(
            "cluster %r: no partitions assigned to this copy after %.0f s of waiting "
            "for the consumer group: it does no work meanwhile (a rebalance waiting "
            "for a slow member, or a broker that no longer assigns the group: see "
            "docs/scale-out.md)",
            cluster.app_id,
            waited,
        )


async def _generations(
    topology: Topology, member: GroupMember, control: ClusterRun, interval: float
) -> None:
    while not control.stopping:
        # The member replaces its event at each assignment taken and each
        # revocation: the wait reads the current one whenever it looks.
        await wait_for_assignment(lambda: member.assignment_ready, control, topology.cluster)
        if control.stopping:
            return
        assigned = member.take_assignment()
        if assigned is None:
            continue
        try:
            await _generation(topology, member, control, interval, assigned)
        finally:
            member.revoked()


async def _generation(
    topology: Topology,
    member: GroupMember,
    control: ClusterRun,
    interval: float,
    assigned: dict[str, list[int]],
) -> None:
    """Run the flow on one assignment until it is revoked or the copy stops."""
    partitions = " ".join(
        f"{name}:{','.join(map(str, sorted(parts)))}" for name, parts in sorted(assigned.items())
    )
    with span("aiowax.cluster.generation", app_id=topology.cluster.app_id, partitions=partitions):
        await _run_generation(topology, member, control, interval, assigned)


async def _run_generation(
    topology: Topology,
    member: GroupMember,
    control: ClusterRun,
    interval: float,
    assigned: dict[str, list[int]],
) -> None:
    flow = topology.generation_flow(assigned)
    if flow is None:
        # Nothing assigned here: wait for the next rebalance.
        await _wait_or_stop(member.revoke_asked, control)
        return
    config = RecoveryConfig(f"kafka://{topology.cluster.app_id}")
    store = KafkaStore(topology, assigned, member.commit, member.committed, config.serde)
    control.restoring = True
    try:
        with span("aiowax.cluster.restore", app_id=topology.cluster.app_id):
            # The app's topics first: the brokers may have lost them.
            await run_in_thread(check_topics, topology)
            restored = await run_in_thread(store.load)
    finally:
        control.restoring = False
    recovery = Recovery(config, store, interval, 1, restored)
    deadline = topology.cluster.revoke_timeout.total_seconds()
    ctx_box: list[RunContext] = []

    def attach(ctx: RunContext) -> None:
        ctx_box.append(ctx)
        # The previous generation's figures stay in the stats until this
        # one starts (and at the end of the copy, the last one's do).
        if control.generation is not None:
            control.runs.remove(control.generation)
        control.generation = ctx
        _attach(control, ctx)

    async with anyio.create_task_group() as tg:

        async def stop_on_revoke() -> None:
            await member.revoke_asked.wait()
            if member.partitions_lost:
                # Another copy owns them now: stop at once, commit nothing.
                run_scope.cancel()
                return
            if ctx_box:
                ctx_box[0].request_stop()
            await anyio.sleep(deadline)
            logger.warning(
                "cluster %r: the work on revoked partitions did not stop within %g s; "
                "cancelled without a final commit",
                topology.cluster.app_id,
                deadline,
            )
            run_scope.cancel()

        tg.start_soon(stop_on_revoke)
        lost = False
        with anyio.CancelScope() as run_scope:
            try:
                await run_pipelines(
                    compile_flow(flow),
                    workers=1,
                    interval=interval,
                    recovery=recovery,
                    on_start=attach,
                    name=flow_name(flow),
                )
            except PartitionsLost as error:
                # Not this copy's any more: the generation ends, the copy
                # stays in the group and waits for its next assignment.
                logger.warning("%s; the work on them stops, uncommitted", error)
                lost = True
        if not lost and not control.stopping and not member.revoke_asked.is_set():
            # Every input of this generation ended by itself: wait for the
            # next rebalance (or a stop) before leaving it.
            await _wait_or_stop(member.revoke_asked, control)
        tg.cancel_scope.cancel()
