"""The topics of a cluster: the sources' looked up, the internal ones created or checked."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from aiowax._cluster.config import KafkaCluster
from aiowax._cluster.topology import Topology, plan
from aiowax._connectors.kafka.client import LIBRDKAFKA_LOGGER, describe_error
from aiowax._connectors.kafka.sink import KafkaSink
from aiowax._connectors.kafka.source import KafkaSource
from aiowax._definition.flow import Dataflow
from aiowax._definition.steps import InputStep, OutputStep, Step
from aiowax._errors import ClusterError

#: How long the brokers get to answer an admin request.
_ADMIN_TIMEOUT_S = 30.0


def _all_topics(admin: AdminClient, cluster: KafkaCluster) -> dict[str, int]:
    """Every topic the brokers have, and its partition count."""
    try:
        metadata = admin.list_topics(timeout=_ADMIN_TIMEOUT_S)
    except KafkaException as exc:
        msg = (
            f"cluster {cluster.app_id!r}: the brokers {cluster.bootstrap} did not answer "
            f"within {_ADMIN_TIMEOUT_S:g} s ({describe_error(exc.args[0])})"
        )
        raise ClusterError(msg) from None
    return {
        name: len(topic.partitions)
        for name, topic in metadata.topics.items()
        if topic.error is None
    }


def _partition_counts(
    admin: AdminClient, cluster: KafkaCluster, topics: list[str]
) -> dict[str, int]:
    """Partitions of each topic that exists (others are left out)."""
    every = _all_topics(admin, cluster)
    return {topic: every[topic] for topic in topics if topic in every}


#: How many topics of another flow the refusal lists.
_LISTED = 5


def _kafka_topics(steps: Iterable[Step]) -> set[str]:
    """The topics the flow's own `KafkaSource` inputs read and `KafkaSink` outputs write."""
    topics: set[str] = set()
    for step in steps:
        if isinstance(step, InputStep) and isinstance(step.source, KafkaSource):
            topics.update(step.source._topics)
        elif isinstance(step, OutputStep) and isinstance(step.sink, KafkaSink):
            topics.add(step.sink._topic)
    return topics


def _check_no_other_flow(topology: Topology, every: dict[str, int], own: set[str]) -> None:
    """Refuse internal topics of the app that no step of this flow uses.

    Keyed steps renamed or removed, or a copy of another flow started with
    this app id (a rolling update that changed the flow): the group would
    split the source partitions between the two flows, and each key's items
    between two states, without a word. Only names whose step part has no
    ``-`` are counted: ``orders-v2-count-changelog`` may be app
    ``orders-v2``'s (step ``count``) as well as app ``orders``'s (step
    ``v2-count``), and another app must not be stopped for it. ``own``:
    the flow's own Kafka topics (`_kafka_topics`), never counted.

    Raises:
        ClusterError: There are such topics.
    """
    cluster = topology.cluster
    prefix = f"{cluster.app_id}-"
    ours = topology.internal_topics()
    other: dict[str, str] = {}
    for topic in every:
        if not topic.startswith(prefix) or topic in ours or topic in own:
            continue
        for suffix in ("-changelog", "-repartition"):
            step_id = topic[len(prefix) : -len(suffix)]
            if topic.endswith(suffix) and step_id and "-" not in step_id:
                other[topic] = step_id
    if not other:
        return
    topics = sorted(other)
    listed = ", ".join(repr(t) for t in topics[:_LISTED])
    more = f" and {len(topics) - _LISTED} more" if len(topics) > _LISTED else ""
    steps = ", ".join(map(repr, sorted(set(other.values()))))
    msg = (
        f"cluster {cluster.app_id!r}: the brokers have internal topics of this app that no "
        f"step of this flow uses ({listed}{more}): keyed step(s) {steps} renamed or "
        "removed, or copies of another flow running with this app id. Copies of one app "
        "id must all run one flow, or the group splits each key's items between two "
        "states. Stop every copy of the other flow; then, to drop that state on purpose, "
        f"delete those topics (or give this flow a new app id, one that does not begin "
        f"with {prefix!r})"
    )
    raise ClusterError(msg)


def prepare_topics(flow: Dataflow, cluster: KafkaCluster) -> Topology:
    """Plan ``flow`` for ``cluster`` and make its internal topics ready (blocking).

    Internal topics that do not exist are created with the topology's
    partition count (changelogs compacted); existing ones must have that
    count.

    Raises:
        ClusterError: A source topic is missing or read by two inputs, an
            internal topic's partition count differs, the app has internal
            topics this flow does not use (`_check_no_other_flow`), the
            brokers do not answer, or cluster mode cannot run the flow (see
            `plan`).
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


def check_topics(topology: Topology) -> None:
    """Check that the app's topics are still those it was planned on (blocking).

    Run at each new assignment, before its state is read: brokers that lost
    the app's topics (one restarted without its data) or topics deleted and
    made again by a client's request (with the brokers' default partition
    count, not compacted) hold none of its state, and an internal topic
    with another partition count moves keys away from theirs. A copy that
    went on would count from nothing without a word.

    Raises:
        ClusterError: A source topic is gone, an internal topic is gone or
            has another partition count, the app has internal topics this
            flow does not use (`_check_no_other_flow`), or the brokers do
            not answer.
    """
    cluster = topology.cluster
    sources = {
        topic: topology.pipelines[index].input.step_id
        for index, source in topology.kafka_sources().items()
        for topic in source._topics
    }
    own = _kafka_topics(
        step for pipeline in topology.pipelines for step in (pipeline.input, *pipeline.steps)
    )
    internal = list(topology.internal_topics())
    config: dict[str, Any] = {**cluster.client_config(), "logger": LIBRDKAFKA_LOGGER}
    admin = AdminClient(config)
    try:
        every = _all_topics(admin, cluster)
    finally:
        admin.poll(0)
    counts = {topic: every[topic] for topic in [*sources, *internal] if topic in every}
    lost = "the brokers lost the app's topics (one restarted without its data?) or they were"
    for topic, step_id in sources.items():
        if topic not in counts:
            msg = (
                f"cluster {cluster.app_id!r}: input step {step_id!r} reads topic {topic!r}, "
                f"which the brokers {cluster.bootstrap} no longer have: {lost} deleted; "
                "this copy stops rather than go on without them"
            )
            raise ClusterError(msg)
    for topic in internal:
        count = counts.get(topic)
        if count is None:
            msg = (
                f"cluster {cluster.app_id!r}: internal topic {topic!r} is gone: {lost} "
                "deleted, and the state it held with them; this copy stops rather than "
                "count from nothing (a copy started now makes it anew, empty)"
            )
            raise ClusterError(msg)
        if count != topology.partitions:
            msg = (
                f"cluster {cluster.app_id!r}: internal topic {topic!r} has {count} partitions, "
                f"but the app was planned on {topology.partitions} partitions: {lost} "
                "deleted and made again by a client's request, without the app's state; "
                "this copy stops rather than count from nothing (delete the app's internal "
                "topics to start over)"
            )
            raise ClusterError(msg)
    _check_no_other_flow(topology, every, own)


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
    every = _all_topics(admin, cluster)
    counts = {topic: every[topic] for topic in readers if topic in every}
    for topic, step_id in readers.items():
        if topic not in counts:
            msg = (
                f"cluster mode: input step {step_id!r} reads topic {topic!r}, which the "
                f"brokers {cluster.bootstrap} do not have (create it first)"
            )
            raise ClusterError(msg)
    topology = plan(flow, cluster, max(counts.values(), default=None))
    # Before this flow's own topics are made: a copy of another flow of the
    # app, still running, must not see them as a sign of another flow.
    _check_no_other_flow(topology, every, _kafka_topics(flow.steps))
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
