"""This copy's membership of the consumer group: assignments in, revocations acknowledged.

One confluent-kafka consumer joins the group ``app_id`` and subscribes to
the flow's source and repartition topics. It never reads a message: every
partition it is assigned is paused at once, and the engine reads them with
consumers of its own (`repartition`). Its poll loop runs in a worker
thread, where librdkafka calls the rebalance callbacks; they hand each
event to the event loop, and a revocation waits there until the loop has
stopped the work on the revoked partitions and committed it (or the
``revoke_timeout`` passed), since a partition must not be written by two
copies at once.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from aiowax._cluster.topology import Topology
from aiowax._connectors.kafka.client import LIBRDKAFKA_LOGGER, describe_error
from aiowax._errors import ClusterError

logger = logging.getLogger("aiowax")
T = TypeVar("T")

#: How long one poll of the group consumer waits.
_POLL_S = 0.2

#: Commit errors saying the group no longer counts this copy's generation.
_NOT_OWNER = frozenset(
    {
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.FENCED_INSTANCE_ID,
    }
)


class PartitionsLost(ClusterError):
    """The group gave this copy's partitions to another (a stall past the session timeout).

    Raised by an offset commit the group refuses (the check before an
    epoch's state is written, or the source offsets after it): the
    generation ends without another commit, and the copy goes on in the
    group, with whatever it is assigned next. What it wrote meanwhile is
    fenced off (see `aiowax._cluster.store`).
    """


class GroupMember:
    """The group consumer of one copy, seen from the event loop."""

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        cluster = topology.cluster
        self._revoke_s = cluster.revoke_timeout.total_seconds()
        session_ms = int(cluster.session_timeout.total_seconds() * 1000)
        self._config: dict[str, Any] = {
            **cluster.client_config(),
            "group.id": cluster.app_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": session_ms,
            "heartbeat.interval.ms": max(100, min(1000, session_ms // 3)),
            "error_cb": self._on_error,
            "logger": LIBRDKAFKA_LOGGER,
        }
        self._consumer: confluent_kafka.Consumer | None = None
        self._closing = False
        self._fatal: KafkaError | None = None
        #: The newest assignment not yet taken by the loop (topic -> partitions).
        self._pending: dict[str, list[int]] | None = None
        self.assignment_ready = anyio.Event()
        #: Set by a revocation while a generation runs; the loop answers with `revoked`.
        self.revoke_asked = anyio.Event()
        #: The last revocation was a loss: no final commit.
        self.partitions_lost = False
        self._running = False
        self._acked = threading.Event()
        self._requests: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()

    # -- the poll thread ----------------------------------------------------------------

    def _on_error(self, error: KafkaError) -> None:
        if error.fatal():
            self._fatal = error

    def _on_assign(self, consumer: confluent_kafka.Consumer, parts: list[TopicPartition]) -> None:
        consumer.assign(parts)
        if parts:
            consumer.pause(parts)
        assigned: dict[str, list[int]] = {}
        for tp in parts:
            assigned.setdefault(tp.topic, []).append(tp.partition)
        with contextlib.suppress(RuntimeError):  # raised once the event loop is gone
            anyio.from_thread.run_sync(self._assigned, assigned)

    def _on_lost(self, consumer: confluent_kafka.Consumer, parts: list[TopicPartition]) -> None:
        # The group gave the partitions to another copy while this one could
        # not answer (a stall past the session timeout): the generation stops
        # without its final commit. What it may have committed meanwhile is
        # ignored by every restore (the store's fencing).
        self._on_revoke(consumer, parts, lost=True)

    def _on_revoke(
        self, consumer: confluent_kafka.Consumer, parts: list[TopicPartition], lost: bool = False
    ) -> None:
        self._acked.clear()
        try:
            must_wait = anyio.from_thread.run_sync(self._revoking, lost)
        except RuntimeError:
            return  # the event loop is gone: nothing runs any more
        deadline = time.monotonic() + self._revoke_s + 5.0
        while must_wait and not self._acked.is_set():
            # The generation's final commit goes through this thread.
            self._serve(0.05)
            if time.monotonic() > deadline:
                logger.warning(
                    "cluster %r: the work on revoked partitions did not stop in time",
                    self._topology.cluster.app_id,
                )
                return

    def _serve(self, wait: float) -> None:
        """Run the offset requests of other threads (librdkafka answers them here)."""
        try:
            fn, future = self._requests.get(timeout=wait)
        except queue.Empty:
            return
        if future.set_running_or_notify_cancel():
            try:
                future.set_result(fn())
            except BaseException as error:
                future.set_exception(error)

    def _poll_loop(self) -> None:
        consumer = confluent_kafka.Consumer(self._config)
        self._consumer = consumer
        try:
            consumer.subscribe(
                self._topology.group_topics(),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            while not self._closing and self._fatal is None:
                msg = consumer.poll(_POLL_S if self._requests.empty() else 0)
                if msg is not None and msg.error() is not None:
                    error = msg.error()
                    if error is not None and error.fatal():
                        self._fatal = error
                while not self._requests.empty():
                    self._serve(0)
        finally:
            consumer.close()  # leaves the group: revokes, then the others rebalance
            self._consumer = None

    # -- the event loop -------------------------------------------------------------------

    def _assigned(self, assigned: dict[str, list[int]]) -> None:
        # The one sign outside a copy of where its work is: say it.
        shown = "; ".join(f"{t} {sorted(p)}" for t, p in sorted(assigned.items())) or "nothing"
        logger.info("cluster %r: assigned %s", self._topology.cluster.app_id, shown)
        self._pending = assigned
        self.assignment_ready.set()

    def _revoking(self, lost: bool) -> bool:
        """A revocation: True if a generation must stop first (then `revoked` answers)."""
        if lost:
            logger.warning(
                "cluster %r: partitions lost (this copy did not answer the group within "
                "its session timeout): the work on them stops without a final commit",
                self._topology.cluster.app_id,
            )
        else:
            logger.info(
                "cluster %r: partitions revoked (a rebalance)", self._topology.cluster.app_id
            )
        self.partitions_lost = lost
        self._pending = None
        self.assignment_ready = anyio.Event()
        if self._running:
            self.revoke_asked.set()
            return True
        return False

    def take_assignment(self) -> dict[str, list[int]] | None:
        """The assignment to run now, if one came; marks a generation as running."""
        assigned, self._pending = self._pending, None
        self.assignment_ready = anyio.Event()
        if assigned is not None:
            self._running = True
            self.revoke_asked = anyio.Event()
        return assigned

    def revoked(self) -> None:
        """The generation has stopped (and committed what it could): let the rebalance go on."""
        self._running = False
        self._acked.set()

    async def run(self) -> None:
        """Be a member until `close`: the poll loop, in a worker thread."""
        await anyio.to_thread.run_sync(self._poll_loop, abandon_on_cancel=True)
        if self._fatal is not None:
            msg = (
                f"cluster {self._topology.cluster.app_id!r}: the group consumer failed: "
                f"{describe_error(self._fatal)}"
            )
            raise ClusterError(msg)

    def close(self) -> None:
        """Leave the group (the poll loop ends, and closes its consumer)."""
        self._closing = True
        self._acked.set()

    # -- offsets (called from worker threads) ------------------------------------------------

    def _on_member_thread(self, fn: Callable[[confluent_kafka.Consumer], T]) -> T:
        """Run ``fn(consumer)`` in the poll thread and wait for it.

        A ``committed`` or ``commit`` call from another thread while this
        one polls waits for an answer that the poll consumes: it blocks
        until its timeout (measured on Tansu 0.6 with confluent-kafka 2.16).
        """
        consumer = self._consumer
        if consumer is None or self._closing:
            msg = f"cluster {self._topology.cluster.app_id!r}: not a group member any more"
            raise ClusterError(msg)
        future: Future[T] = Future()
        self._requests.put((lambda: fn(consumer), future))
        return future.result()

    def commit(self, offsets: list[TopicPartition]) -> None:
        """Commit source offsets for the current generation of the group."""

        def commit(consumer: confluent_kafka.Consumer) -> None:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
            except KafkaException as exc:
                if exc.args[0].code() in _NOT_OWNER:
                    msg = (
                        f"cluster {self._topology.cluster.app_id!r}: this copy no longer owns "
                        f"its partitions ({describe_error(exc.args[0])})"
                    )
                    raise PartitionsLost(msg) from None
                msg = (
                    f"cluster {self._topology.cluster.app_id!r}: committing source offsets "
                    f"failed: {describe_error(exc.args[0])}"
                )
                raise ClusterError(msg) from None

        self._on_member_thread(commit)

    def committed(self, parts: list[TopicPartition]) -> list[TopicPartition]:
        """The group's committed offsets of ``parts`` (negative: none)."""

        def committed(consumer: confluent_kafka.Consumer) -> list[TopicPartition]:
            result: list[TopicPartition] = consumer.committed(parts, timeout=30)
            return result

        return self._on_member_thread(committed)
