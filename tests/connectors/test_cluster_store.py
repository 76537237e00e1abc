"""Cluster mode on a real broker: what a restore counts (`aiowax._cluster.store`), and errors.

Several `KafkaStore` objects on one assignment stand for the copies that
owned it one after the other; the test drives their restores and commits
in the order a rebalance, a crash or a stall would, and checks what the
next restore brings back.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from confluent_kafka import TopicPartition
from kafka_helpers import KafkaHelper

import aiowax
from aiowax._cli_progress import ProgressLine
from aiowax._cluster.group import PartitionsLost
from aiowax._cluster.repartition import partition_of
from aiowax._cluster.store import KafkaStore
from aiowax._cluster.topics import check_topics, prepare_topics
from aiowax._cluster.topology import Topology
from aiowax._recovery.runtime import Recovery
from aiowax.cluster import ClusterError, KafkaCluster
from aiowax.connectors.kafka import KafkaSink, KafkaSource
from aiowax.dataflow import Dataflow
from aiowax.recovery import RecoveryConfig, UnmatchedSnapshotsError
from aiowax.stats import FlowStats
from aiowax.testing import TestingSink

STEP = "count"
SERDE = RecoveryConfig("unused").serde


def _count(seen: int, _value: Any) -> tuple[int, int]:
    return seen + 1, seen + 1


def _topology(kafka: KafkaHelper, *, kind: str = "stateful_map", app_id: str = "") -> Topology:
    """The app's topology, with step ``STEP`` of ``kind``; a new app unless ``app_id``."""
    src = kafka.create_topic(2, "src")
    flow = Dataflow()
    flow.input("in", KafkaSource([kafka.bootstrap], [src]))
    if kind == "stateful_map":
        flow.stateful_map(STEP, lambda: 0, _count)
    else:
        flow.reduce(STEP, lambda a, b: a + b, lambda total: total > 10)
    flow.output("out", KafkaSink([kafka.bootstrap], kafka.create_topic(1, "out")))
    app_id = app_id or kafka.topic_name("app")
    cluster = KafkaCluster(brokers=[kafka.bootstrap], app_id=app_id, partitions=2)
    return prepare_topics(flow, cluster)


def _store(topology: Topology, group: list[str] | None = None) -> KafkaStore:
    """A copy's store for every partition (no source offsets: they are the group's).

    ``group`` says what the group answers this copy's offset commits: while
    it holds ``"evicted"``, they are refused as a real group refuses a member
    it gave up on.
    """
    assigned = {topic: [0, 1] for topic in topology.group_topics()}
    answer = group if group is not None else []

    def commit_offsets(_offsets: list[TopicPartition]) -> None:
        if "evicted" in answer:
            raise PartitionsLost("UNKNOWN_MEMBER_ID")

    def no_offsets(parts: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, -1) for tp in parts]

    return KafkaStore(topology, assigned, commit_offsets, no_offsets, SERDE)


@pytest.fixture
def stores() -> Iterator[Callable[..., KafkaStore]]:
    """Makes copies' stores as `_store` does; closes every one when the test ends."""
    made: list[KafkaStore] = []

    def make(topology: Topology, group: list[str] | None = None) -> KafkaStore:
        store = _store(topology, group)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def _commit(store: KafkaStore, counts: dict[str, int]) -> None:
    changes = {(STEP, key): SERDE.ser(n) for key, n in counts.items()}
    store.commit(store.committed + 1, changes, 1, 0)


def _counts(restored: dict[tuple[str, str], bytes]) -> dict[str, int]:
    return {key: SERDE.de(data) for (step, key), data in restored.items() if step == STEP}


def test_a_zombie_commit_after_another_copy_took_over_is_ignored(
    kafka: KafkaHelper, stores: Callable[..., KafkaStore]
) -> None:
    # Copy A owns the partitions and commits; it stalls past the session
    # timeout and copy B takes over (restores, commits); then A wakes up and
    # makes the commit it was about to make (a helper session saw this with
    # SIGSTOP: A's final commit came after B's, and the next restore took
    # A's stale counts, for good). The next restore must see B's.
    topology = _topology(kafka)
    a = stores(topology)
    assert _counts(a.load()) == {}
    _commit(a, {"k1": 5, "k2": 3})
    b = stores(topology)
    assert _counts(b.load()) == {"k1": 5, "k2": 3}
    _commit(b, {"k1": 7})
    _commit(a, {"k1": 100, "k2": 100, "k3": 100})  # the zombie's
    _commit(b, {"k2": 4})
    assert _counts(stores(topology).load()) == {"k1": 7, "k2": 4}


def test_a_zombie_commit_before_the_new_owner_commits_is_ignored_too(
    kafka: KafkaHelper, stores: Callable[..., KafkaStore]
) -> None:
    # The zombie wakes up between B's restore and B's first commit: B's own
    # state is what it restored, so every later restore must agree with it.
    topology = _topology(kafka)
    a = stores(topology)
    a.load()
    _commit(a, {"k1": 5})
    b = stores(topology)
    assert _counts(b.load()) == {"k1": 5}
    _commit(a, {"k1": 100})  # the zombie's
    assert _counts(stores(topology).load()) == {"k1": 5}
    # And the zombie's newer record was written over with the committed
    # state (what a compacted topic keeps is a committed record).
    assert _counts(stores(topology).load()) == {"k1": 5}


def test_a_copy_the_group_gave_up_on_writes_nothing(
    kafka: KafkaHelper, stores: Callable[..., KafkaStore]
) -> None:
    # The zombie wakes up after the group evicted it but before the new
    # owner claimed the partitions: the claims cannot fence that commit
    # off (its writer still held the latest claim), and its source offsets
    # would not be committed (epoch N's state with epoch N-1's offsets: its
    # input counted twice). The group is asked first; it writes nothing.
    topology = _topology(kafka)
    group: list[str] = []
    a = stores(topology, group)
    a.load()
    _commit(a, {"k1": 5})
    group.append("evicted")
    with pytest.raises(PartitionsLost):
        _commit(a, {"k1": 100})
    assert _counts(stores(topology).load()) == {"k1": 5}


def test_an_unfinished_commit_is_ignored_and_changelogs_of_before_fencing_still_load(
    kafka: KafkaHelper, stores: Callable[..., KafkaStore]
) -> None:
    topology = _topology(kafka)
    cut = next(iter(topology.cuts.values()))
    changelog = cut.changelogs[STEP]
    # Records as aiowax wrote them before owner tokens: (epoch, state) and
    # one b"m" marker per partition.
    old = [
        (b"s" + b"k1", pickle.dumps((1, SERDE.ser(2))), 0),
        (b"m", pickle.dumps((1, None)), 0),
        (b"m", pickle.dumps((1, None)), 1),
        (b"s" + b"k1", pickle.dumps((2, SERDE.ser(9))), 0),  # epoch 2 never committed
    ]
    a = stores(topology)
    a._write("test records", {changelog: old})
    assert _counts(a.load()) == {"k1": 2}
    assert _counts(stores(topology).load()) == {"k1": 2}


def _parse(kv: tuple[bytes, bytes]) -> tuple[str, bytes]:
    if kv[1] == b"bad":
        raise ValueError("bad message")
    return kv[0].decode(), kv[1]


def _check_kinds(store: KafkaStore, topology: Topology) -> dict[tuple[str, str], bytes]:
    """Restore, and check the kinds as a generation does before building any operator."""
    restored = store.load()
    recovery = Recovery(RecoveryConfig("kafka://app"), store, 1.0, 1, restored)
    steps = topology.pipelines[0].steps
    recovery.check_kinds({step.step_id: step.kind for step in steps})
    return restored


def test_a_step_whose_kind_changed_under_its_id_is_refused_naming_both_kinds(
    kafka: KafkaHelper, stores: Callable[..., KafkaStore]
) -> None:
    # A new version of the app turns the stateful_map into a reduce under
    # the same id: the reduce would be handed the mapper's states.
    topology = _topology(kafka)
    old = stores(topology)
    _check_kinds(old, topology)
    _commit(old, {"k1": 5, "k2": 3})
    # And a commit it did not finish: each restore repairs it, with a marker.
    (cut,) = topology.cuts.values()
    unfinished = pickle.dumps((old.committed + 1, SERDE.ser(99), old.owner))
    old._write(
        "test records", {cut.changelogs[STEP]: [(b"sk1", unfinished, partition_of("k1", 2))]}
    )
    changed = _topology(kafka, kind="reduce", app_id=topology.cluster.app_id)
    for _ in range(2):  # and again: the refused restore's repair kept the old kinds
        with pytest.raises(UnmatchedSnapshotsError) as refused:
            _check_kinds(stores(changed), changed)
        said = str(refused.value)
        assert f"the changelog topics of app {topology.cluster.app_id!r} hold" in said
        assert "step 'count': 2 snapshot(s) of a stateful_map step, which is a reduce" in said
        assert "discard_unmatched" not in said  # not an option in cluster mode
    # The old version still resumes its states.
    back = stores(topology)
    _check_kinds(back, topology)
    assert back.step_kinds() == {STEP: "stateful_map"}


def test_markers_that_record_no_kinds_are_accepted_and_later_ones_record_them(
    kafka: KafkaHelper, stores: Callable[..., KafkaStore]
) -> None:
    topology = _topology(kafka)
    old = stores(topology)
    old.load()
    _commit(old, {"k1": 5})
    # A marker as an earlier release wrote it: (epoch, reader, owner), no kinds.
    (cut,) = topology.cuts.values()
    primary = next(iter(cut.changelogs.values()))
    marker = pickle.dumps((old.committed + 1, None, old.owner))
    key = b"m" + old.owner.encode()
    old._write("commit markers", {primary: [(key, marker, p) for p in (0, 1)]})
    store = stores(topology)
    assert _counts(_check_kinds(store, topology)) == {"k1": 5}  # nothing to compare
    assert store.step_kinds() == {}
    store.record_kinds({STEP: "stateful_map"})
    _commit(store, {"k1": 6})
    again = stores(topology)
    assert _counts(again.load()) == {"k1": 6}
    assert again.step_kinds() == {STEP: "stateful_map"}


def _recreate(kafka: KafkaHelper, topic: str, partitions: int | None) -> None:
    """Delete ``topic``; make it again with ``partitions`` (None: leave it deleted)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    admin.delete_topics([topic], operation_timeout=10)[topic].result(15)
    if partitions is not None:
        made = admin.create_topics([NewTopic(topic, partitions, 1)], operation_timeout=10)
        made[topic].result(15)


def test_an_assignment_whose_topics_the_brokers_lost_is_refused(kafka: KafkaHelper) -> None:
    # helper-63: a broker back from a restart without its data (Tansu's
    # memory storage) made the topics anew at the copies' first requests,
    # with its default 4 partitions and no compaction, and the copies went
    # on counting from nothing, silently. A copy checks the app's topics at
    # each new assignment, before reading its state.
    topology = _topology(kafka)
    check_topics(topology)  # as planned: nothing to say
    changelog = next(topic for topic, compacted in topology.internal_topics().items() if compacted)
    _recreate(kafka, changelog, 4)
    with pytest.raises(ClusterError) as info:
        check_topics(topology)
    message = str(info.value)
    assert f"internal topic {changelog!r} has 4 partitions, but the app was planned on 2" in message
    assert "count from nothing" in message
    _recreate(kafka, changelog, None)
    with pytest.raises(ClusterError) as info:
        check_topics(topology)
    assert f"internal topic {changelog!r} is gone" in str(info.value)
    assert "a copy started now makes it anew, empty" in str(info.value)
    kafka.create_topic_named(changelog, 2)
    check_topics(topology)
    ((source,),) = (s._topics for s in topology.kafka_sources().values())
    _recreate(kafka, source, None)
    with pytest.raises(ClusterError, match=f"input step 'in' reads topic {source!r}, which"):
        check_topics(topology)


def test_a_flow_whose_app_has_internal_topics_it_does_not_use_is_refused(
    kafka: KafkaHelper,
) -> None:
    # helper-63: a rolling update that renamed the keyed step joined the old
    # copies' group, took half of the source partitions and counted their
    # keys in a new, empty state: each key's items split between two
    # states, silently. The old step's topics tell (app ids never begin one
    # another with a "-"): refused before this flow's own topics are made,
    # and at each assignment.
    topology = _topology(kafka)
    app = topology.cluster.app_id
    renamed = Dataflow()
    ((source,),) = (s._topics for s in topology.kafka_sources().values())
    renamed.input("in", KafkaSource([kafka.bootstrap], [source]))
    renamed.stateful_map("count_v2", lambda: 0, _count)
    renamed.output("out", TestingSink([]))
    cluster = KafkaCluster(brokers=[kafka.bootstrap], app_id=app, partitions=2)
    with pytest.raises(ClusterError) as info:
        prepare_topics(renamed, cluster)
    message = str(info.value)
    assert f"({app + '-count-changelog'!r}, {app + '-count-repartition'!r})" in message
    assert "keyed step(s) 'count' renamed or removed" in message
    assert "delete those topics" in message
    names = _all_topic_names(kafka)
    assert f"{app}-count_v2-changelog" not in names  # nothing made for the refused flow
    # A copy of the old flow sees the new one's topics at its next assignment.
    kafka.create_topic_named(f"{app}-count_v2-changelog", 2)
    with pytest.raises(ClusterError, match=r"keyed step\(s\) 'count_v2' renamed or removed"):
        check_topics(topology)


def test_topics_like_the_apps_own_that_are_not_its_state_are_let_be(kafka: KafkaHelper) -> None:
    # Another app whose id begins with this one's and a "-" (orders and
    # orders-v2) names orders-v2-count-changelog: its step part has a "-",
    # so it is not counted (app orders' step "v2-count" or app orders-v2's
    # "count": a running app must not be stopped for another's topics).
    # Nor are the flow's own source and sink topics, whatever their names.
    app = kafka.topic_name("app")
    source = kafka.create_topic_named(f"{app}-feed-repartition", 2)
    sink = kafka.create_topic_named(f"{app}-audit-changelog", 1)
    kafka.create_topic_named(f"{app}-v2-count-changelog", 2)
    flow = Dataflow()
    flow.input("in", KafkaSource([kafka.bootstrap], [source]))
    flow.stateful_map(STEP, lambda: 0, _count)
    flow.output("out", KafkaSink([kafka.bootstrap], sink))
    topology = prepare_topics(flow, KafkaCluster(brokers=[kafka.bootstrap], app_id=app))
    check_topics(topology)
    kafka.create_topic_named(f"{app}-gone-repartition", 2)  # a step "gone": this app's
    with pytest.raises(ClusterError, match=r"keyed step\(s\) 'gone' renamed or removed"):
        check_topics(topology)


def _all_topic_names(kafka: KafkaHelper) -> set[str]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    return set(admin.list_topics(timeout=15).topics)


def test_a_step_error_in_cluster_mode_comes_out_as_it_was_raised(kafka: KafkaHelper) -> None:
    # It came out inside three nested ExceptionGroups (the copy's task
    # groups), so `except ValueError` missed it and the CLI printed about
    # a hundred lines of internal frames.
    src = kafka.create_topic(2, "src")
    kafka.produce(src, [(b"a", b"1"), (b"a", b"bad")])
    flow = Dataflow()
    flow.input("in", KafkaSource([kafka.bootstrap], [src]))
    flow.map("parse", _parse)
    flow.stateful_map(STEP, lambda: 0, _count)
    flow.output("out", KafkaSink([kafka.bootstrap], kafka.create_topic(1, "out")))
    cluster = KafkaCluster(brokers=[kafka.bootstrap], app_id=kafka.topic_name("app"))

    async def main() -> None:
        with anyio.fail_after(60):
            await aiowax.run(flow, cluster=cluster)

    with pytest.raises(ValueError, match="bad message") as info:
        anyio.run(main)
    assert any("step 'parse'" in note for note in info.value.__notes__)


def test_on_stats_reports_a_cluster_copy_and_its_end(kafka: KafkaHelper) -> None:
    # `on_stats` was never called in cluster mode (the copy hands the
    # reporter its ClusterRun, which the reporter took for a RunContext:
    # each call failed and was logged as the callback's error), and the run
    # ended with that AttributeError instead of its cancellation. The
    # repartition topic's writer and reader steps were counted as the
    # flow's own input and output too: the progress line doubled both.
    src = kafka.create_topic(2, "src")
    kafka.produce(src, [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")])
    out: list[Any] = []
    flow = Dataflow("orders")
    flow.input("in", KafkaSource([kafka.bootstrap], [src]))
    flow.map("parse", _parse)
    flow.stateful_map(STEP, lambda: 0, _count)
    flow.output("out", TestingSink(out))
    cluster = KafkaCluster(brokers=[kafka.bootstrap], app_id=kafka.topic_name("app"))
    seen: list[FlowStats] = []

    def written(stats: FlowStats) -> int:
        return sum(s.items_out for s in stats.steps if s.step_id == "out")

    async def main() -> None:
        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    with pytest.raises(anyio.get_cancelled_exc_class()):
                        await aiowax.run(
                            flow, cluster=cluster, on_stats=seen.append, stats_interval=0.05
                        )

                tg.start_soon(run)
                while not (seen and written(seen[-1]) == 3):
                    await anyio.sleep(0.05)
                tg.cancel_scope.cancel()

    anyio.run(main)
    assert sorted(out) == [("a", 1), ("a", 2), ("b", 1)]
    final = seen[-1]
    assert final.status == "cancelled"
    kinds = {s.step_id: s.kind for s in final.steps}
    assert kinds["in"] == "input" and kinds["out"] == "output"
    assert sorted(kinds.values()).count("repartition_in") == 1
    assert sorted(kinds.values()).count("repartition_out") == 1
    line = ProgressLine(io.StringIO()).text(final)
    assert line.startswith("aiowax: orders cancelled") and "| read 3 | written 3 |" in line
