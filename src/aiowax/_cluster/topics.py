"""The topics of a cluster: the sources' looked up, the internal ones created or checked."""

from __future__ import annotations

from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from aiowax._cluster.config import KafkaCluster
from aiowax._cluster.topology import Topology, plan
from aiowax._connectors.kafka.client import LIBRDKAFKA_LOGGER, describe_error
from aiowax._connectors.kafka.source import KafkaSource
from aiowax._definition.flow import Dataflow
from aiowax._definition.steps import InputStep
from aiowax._errors import ClusterError

#: How long the brokers get to answer an admin request.
_ADMIN_TIMEOUT_S = 30.0


def _partition_counts(
    admin: AdminClient, cluster: KafkaCluster, topics: list[str]
) -> dict[str, int]:
    """Partitions of each topic that exists (others are left out)."""
    try:
        metadata = admin.list_topics(timeout=_ADMIN_TIMEOUT_S)
    except KafkaException as exc:
        msg = (
            f"cluster {cluster.app_id!r}: the brokers {cluster.bootstrap} did not answer "
            f"within {_ADMIN_TIMEOUT_S:g} s ({describe_error(exc.args[0])})"
        )
        raise ClusterError(msg) from None
    return {
        topic: len(metadata.topics[topic].partitions)
        for topic in topics
        if topic in metadata.topics and metadata.topics[topic].error is None
    }


def prepare_topics(flow: Dataflow, cluster: KafkaCluster) -> Topology:
    """Plan ``flow`` for ``cluster`` and make its internal topics ready (blocking).

    Internal topics that do not exist are created with the topology's
    partition count (changelogs compacted); existing ones must have that
    count.

    Raises:
        ClusterError: A source topic is missing or read by two inputs, an
            internal topic's partition count differs, the brokers do not
            answer, or cluster mode cannot run the flow (see `plan`).
    """
    # What cluster mode cannot run is said before the brokers are asked
    # anything (they may not answer).
    plan(flow, cluster, None)
    config: dict[str, Any] = {**cluster.client_config(), "logger": LIBRDKAFKA_LOGGER}
    admin = AdminClient(config)
    try:
        return _prepare(admin, flow, cluster)
    finally:
        # An AdminClient hands its log lines to the logger only in a poll.
        admin.poll(0)


def _prepare(admin: AdminClient, flow: Dataflow, cluster: KafkaCluster) -> Topology:
    sources = [
        (step.step_id, step.source)
        for step in flow.steps
        if isinstance(step, InputStep) and isinstance(step.source, KafkaSource)
    ]
    readers: dict[str, str] = {}
    for step_id, source in sources:
        assert isinstance(source, KafkaSource)
        for topic in source._topics:
            if topic in readers:
                msg = (
                    f"cluster mode: topic {topic!r} is read by input steps {readers[topic]!r} "
                    f"and {step_id!r}; in cluster mode a topic's offsets belong to one input"
                )
                raise ClusterError(msg)
            readers[topic] = step_id
    counts = _partition_counts(admin, cluster, list(readers))
    for topic, step_id in readers.items():
        if topic not in counts:
            msg = (
                f"cluster mode: input step {step_id!r} reads topic {topic!r}, which the "
                f"brokers {cluster.bootstrap} do not have (create it first)"
            )
            raise ClusterError(msg)
    topology = plan(flow, cluster, max(counts.values(), default=None))
    _ensure_internal(admin, topology)
    return topology


def _ensure_internal(admin: AdminClient, topology: Topology) -> None:
    wanted = topology.internal_topics()
    if not wanted:
        return
    cluster = topology.cluster
    existing = _partition_counts(admin, cluster, list(wanted))
    for topic, count in existing.items():
        if count != topology.partitions:
            msg = (
                f"cluster {cluster.app_id!r}: internal topic {topic!r} has {count} partitions, "
                f"but this flow needs {topology.partitions} (KafkaCluster(partitions=...) or "
                "the source topics changed); a different count would move keys away from "
                "their state: keep the count, or delete the app's internal topics to start over"
            )
            raise ClusterError(msg)
    missing = [topic for topic in wanted if topic not in existing]
    if not missing:
        return
    new = [
        NewTopic(
            topic,
            topology.partitions,
            cluster.replication_factor,
            config={"cleanup.policy": "compact"} if wanted[topic] else {},
        )
        for topic in missing
    ]
    futures: dict[str, Any] = admin.create_topics(new, request_timeout=_ADMIN_TIMEOUT_S)
    for topic, future in futures.items():
        try:
            future.result(_ADMIN_TIMEOUT_S)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() == error.TOPIC_ALREADY_EXISTS:
                continue  # another copy created it meanwhile
            what = describe_error(error)
            msg = f"cluster {cluster.app_id!r}: cannot create topic {topic!r}: {what}"
            raise ClusterError(msg) from None
