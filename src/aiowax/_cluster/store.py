"""Recovery's store in cluster mode: changelog topics, commit markers, the group's offsets.

The engine's recovery (`aiowax._recovery.runtime.Recovery`) hands a store
each epoch's snapshots; in cluster mode they go to Kafka instead of SQLite:

- a keyed step's state for a key goes to ``{app}-{step}-changelog``, to the
  partition the key hashes to, as a record keyed ``b"s" + key`` whose value
  is the pickled ``(epoch, state bytes or None)``;
- once those are acknowledged, the epoch is committed for each assigned
  partition by one marker record (key ``b"m"``) in the first changelog of
  the cut, holding ``(epoch, the repartition reader's snapshot)``: the
  offset to read from next and the origins seen (`repartition`), and the
  kind of each keyed step of the cut, so that a restore refuses the states
  of a step whose kind changed under the same id;
- then the offsets of the `KafkaSource` partitions are committed to the
  consumer group.

Restoring a partition reads its changelogs to their end and keeps, per
key, the newest state of an epoch no newer than the last marker: the
changes of an epoch a copy did not finish committing (it died meanwhile)
are ignored, and the input is read again from the offset of the last
marker, so each input counts once in the state. The restoring copy then
writes those keys again with their committed state, under a new epoch and
marker, so the newest record of every key is always a committed one: what
a compacted topic keeps. Epoch numbers only grow: a copy starts above every
epoch found in what it restores.

**Fencing.** A copy that stalls longer than the group's session timeout (a
long GC pause, a stopped VM) loses its partitions to another copy without
knowing it, and may still commit an epoch when it wakes up: a *zombie*.
Two defences. Before writing an epoch's state, a commit asks the group
(`_check_owner`): an evicted member's offset commit is refused, so a
zombie writes nothing. And each assignment a copy restores has an owner
token of its own, written as a claim record (key ``b"c" + token``) to every
partition it takes, *before* it reads the changelogs; every state record
and marker carries its writer's token, and a restore counts a marker only
if its writer made the latest claim before it in the log, and a state
record only if its epoch is no newer than the last marker its writer got
counted. So what a zombie writes after another copy's claim (a stall inside
a commit, past the group's check) is ignored, by that copy's own restore as
by every later one. Markers are keyed ``b"m" + token``, so compaction keeps
the last marker of each owner. It can still replace a zombie's own last
counted marker or state records by the ones it wrote too late; that case
(a stall within a commit, then compaction before the next restore) loses
those keys' state, and only Kafka transactions would close it
(docs/scale-out.md, Limits).
"""

from __future__ import annotations

import contextlib
import pickle
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import TopicPartition

from aiowax._cluster.repartition import partition_of
from aiowax._cluster.topology import Cut, Topology
from aiowax._connectors.kafka.sink import _KafkaSinkPartition
from aiowax._connectors.kafka.source import KafkaSource
from aiowax._errors import ClusterError, KafkaConnectorError
from aiowax._recovery.config import SnapshotSerde

_STATE = b"s"
_MARKER = b"m"
_CLAIM = b"c"

#: Commits offsets of source partitions to the group (`GroupMember.commit`).
CommitOffsets = Callable[[list[TopicPartition]], None]
#: Reads the group's committed offsets (`GroupMember.committed`).
ReadOffsets = Callable[[list[TopicPartition]], list[TopicPartition]]


def read_partition(topology: Topology, topic: str, partition: int) -> list[tuple[bytes, bytes]]:
    """Every record of a changelog partition, in order, up to its end now."""
    source = KafkaSource(
        list(topology.cluster.brokers),
        [topic],
        tail=False,
        # An empty partition's fetch waits this long for data (default 500 ms).
        add_config={**topology.cluster.add_config, "fetch.wait.max.ms": 20},
        batch_size=10_000,
    )
    part = source.build_part(datetime.now(UTC), f"{partition}-{topic}", None)
    records: list[tuple[bytes, bytes]] = []
    try:
        while True:
            try:
                records.extend(part.next_batch())
            except StopIteration:
                return records
    finally:
        part.close()


@dataclass
class _Markers:
    """What the markers of a partition's primary changelog commit.

    Attributes:
        counted: Each owner's newest counted marker epoch.
        reader: The repartition reader's snapshot of the newest counted marker.
        top: The highest epoch seen.
        kinds: The step kinds the newest counted marker records ({}: none,
            written before markers recorded them).
    """

    counted: dict[str | None, int] = field(default_factory=dict)
    reader: bytes | None = None
    top: int = 0
    kinds: dict[str, str] = field(default_factory=dict)


def _markers(primary: list[tuple[bytes, bytes]]) -> _Markers:
    """Read the markers of a partition's primary changelog, in log order."""
    owner: str | None = None  # no claim yet: records of before fencing
    found = _Markers()
    for key, value in primary:
        kind = key[:1]
        if kind == _CLAIM:
            owner = key[1:].decode()
        elif kind == _MARKER:
            marker = pickle.loads(value)
            epoch, snapshot = marker[0], marker[1]
            writer = marker[2] if len(marker) > 2 else None
            found.top = max(found.top, epoch)
            if writer == owner:
                found.counted[writer] = epoch
                found.reader = snapshot
                found.kinds = marker[3] if len(marker) > 3 else {}
    return found


def _state_record(value: bytes) -> tuple[int, bytes | None, str | None]:
    """``(epoch, state, owner)`` of a state record (owner None: written before fencing)."""
    record = pickle.loads(value)
    return record[0], record[1], record[2] if len(record) > 2 else None


class KafkaStore:
    """What `Recovery` commits to and restores from, for one assignment of one copy."""

    def __init__(
        self,
        topology: Topology,
        assigned: Mapping[str, list[int]],
        commit_offsets: CommitOffsets,
        read_offsets: ReadOffsets,
        serde: SnapshotSerde,
    ) -> None:
        self._topology = topology
        self._commit_offsets = commit_offsets
        self._read_offsets = read_offsets
        self._serde = serde
        self.committed = 0
        #: This assignment's owner token (see "Fencing" above).
        self.owner = uuid.uuid4().hex
        #: The assigned partitions of each cut.
        self._parts: list[tuple[Cut, int]] = [
            (cut, p)
            for cut in topology.cuts.values()
            for p in sorted(assigned.get(cut.repartition_topic, []))
        ]
        self._changelog = {
            step_id: topic
            for cut in topology.cuts.values()
            for step_id, topic in cut.changelogs.items()
        }
        self._reader = {cut.reader_id: cut for cut in topology.cuts.values()}
        self._inputs = {
            topology.pipelines[index].input.step_id for index in topology.kafka_sources()
        }
        self._assigned_sources = [
            TopicPartition(topic, p)
            for topic in topology.source_topics()
            for p in sorted(assigned.get(topic, []))
        ]
        #: The reader snapshot each partition's next marker carries.
        self._reader_state: dict[tuple[str, int], bytes | None] = {}
        #: The kind of each keyed step, which every marker records for the
        #: steps of its cut, so that a step whose kind changed under the
        #: same id is refused (`step_kinds`; `Recovery.check_kinds`).
        self._kinds = {
            step.step_id: step.kind
            for cut in topology.cuts.values()
            for step in topology.pipelines[cut.pipeline].steps[cut.position :]
            if step.step_id in cut.changelogs
        }
        #: Per partition, the kinds its restored marker recorded, which its
        #: markers keep until the flow's kinds are found to match them
        #: (`record_kinds`): a repair written by `load` must not record
        #: the new kinds over the old states.
        self._restored_kinds: dict[tuple[str, int], dict[str, str]] = {}
        self._writers: dict[str, _KafkaSinkPartition] = {}

    # -- what Recovery reads in messages -----------------------------------------------

    @property
    def db_dir(self) -> str:
        return f"the changelog topics of app {self._topology.cluster.app_id!r}"

    def where(self, step_id: str, key: str) -> str:
        topic = self._changelog.get(step_id)
        if topic is None:
            return f"the snapshot of {key!r} in {self.db_dir}"
        return f"changelog topic {topic!r} partition {partition_of(key, self._topology.partitions)}"

    # -- restoring -------------------------------------------------------------------

    def load(self) -> dict[tuple[str, str], bytes]:
        """The snapshots to resume this assignment from (blocking: call it in a thread).

        First claims each assigned partition (see "Fencing" above), then
        reads it. A partition's committed epoch is its newest counted
        marker's; a state record counts if its writer's last counted marker
        is not older. Keys whose newest record does not count (a copy that
        died while committing, a zombie) are written again, with their
        committed state, before anything runs, so that the newest record of
        every key is a committed one (what compaction keeps).
        """
        claims: dict[str, list[tuple[bytes, bytes, int]]] = {}
        claim = _CLAIM + self.owner.encode()
        for cut, p in self._parts:
            primary_topic = next(iter(cut.changelogs.values()))
            claims.setdefault(primary_topic, []).append((claim, pickle.dumps(None), p))
        self._write("ownership claims", claims)
        restored: dict[tuple[str, str], bytes] = {}
        repairs: list[tuple[str, str, bytes | None]] = []
        top = 0
        for cut, p in self._parts:
            logs = {
                step_id: read_partition(self._topology, topic, p)
                for step_id, topic in cut.changelogs.items()
            }
            primary = logs[next(iter(cut.changelogs))]
            markers = _markers(primary)
            counted, reader = markers.counted, markers.reader
            top = max(top, markers.top)
            self._restored_kinds[(cut.reader_id, p)] = markers.kinds
            for step_id, log in logs.items():
                states: dict[str, bytes | None] = {}
                newest_counts: dict[str, bool] = {}
                for key, value in log:
                    if key[:1] != _STATE:
                        continue
                    epoch, data, owner = _state_record(value)
                    top = max(top, epoch)
                    state_key = key[1:].decode("utf-8", "surrogatepass")
                    counts = epoch <= counted.get(owner, -1)
                    if counts:
                        states[state_key] = data
                    newest_counts[state_key] = counts
                for state_key, data in states.items():
                    if data is not None:
                        restored[(step_id, state_key)] = data
                repairs.extend(
                    (step_id, k, states.get(k))
                    for k in sorted(k for k, counts in newest_counts.items() if not counts)
                )
            self._reader_state[(cut.reader_id, p)] = reader
            if reader is not None:
                restored[(cut.reader_id, f"{p}-{cut.repartition_topic}")] = reader
        for tp in self._read_offsets(self._assigned_sources) if self._assigned_sources else []:
            if tp.offset >= 0:
                restored[(self._input_of(tp.topic), f"{tp.partition}-{tp.topic}")] = (
                    self._serde.ser(tp.offset)
                )
        self.committed = top
        if repairs:
            self.commit(top + 1, {(step_id, key): data for step_id, key, data in repairs}, 1, 0)
        return restored

    def step_kinds(self) -> dict[str, str]:
        """The kind of each keyed step, as the restored markers recorded it.

        Where the partitions disagree (a copy of another version committed
        some of them), the kind that differs from this flow's, so that
        `Recovery.check_kinds` refuses it.
        """
        kinds: dict[str, str] = {}
        for restored in self._restored_kinds.values():
            for step_id, kind in restored.items():
                if step_id not in kinds or kinds[step_id] == self._kinds.get(step_id):
                    kinds[step_id] = kind
        return kinds

    def record_kinds(self, kinds: Mapping[str, str]) -> None:
        """From now on, markers record this flow's kinds (they matched the snapshots)."""
        self._restored_kinds.clear()

    def _input_of(self, topic: str) -> str:
        for index, source in self._topology.kafka_sources().items():
            if topic in source._topics:
                return self._topology.pipelines[index].input.step_id
        raise AssertionError(topic)

    # -- committing ------------------------------------------------------------------

    def _writer(self, topic: str) -> _KafkaSinkPartition:
        """The producer of one changelog topic (the sink's: same batching and error checks)."""
        writer = self._writers.get(topic)
        if writer is None:
            config = {
                **self._topology.cluster.add_config,
                "enable.idempotence": True,
                "linger.ms": 5,
            }
            writer = _KafkaSinkPartition(list(self._topology.cluster.brokers), topic, config)
            self._writers[topic] = writer
        return writer

    def _write(self, what: str, records: Mapping[str, list[tuple[bytes, bytes, int]]]) -> None:
        """Write ``records`` (by topic) and wait until the brokers have them all."""
        try:
            for topic, batch in records.items():
                self._writer(topic)._produce_records(batch)
            for topic in records:
                self._writers[topic]._confirm()
        except KafkaConnectorError as error:
            msg = (
                f"cluster mode: writing the {what} of app {self._topology.cluster.app_id!r} "
                f"failed: {error}"
            )
            raise ClusterError(msg) from error

    def commit(
        self,
        epoch: int,
        changes: Mapping[tuple[str, str], bytes | None],
        worker_count: int,
        keep_from: int,
    ) -> None:
        """Commit ``epoch``: states, then markers, then source offsets (blocking)."""
        dumps, protocol = pickle.dumps, pickle.HIGHEST_PROTOCOL
        offsets: list[TopicPartition] = []
        partitions = self._topology.partitions
        states: dict[str, list[tuple[bytes, bytes, int]]] = {}
        for (step_id, key), data in changes.items():
            topic = self._changelog.get(step_id)
            if topic is not None:
                record = dumps((epoch, data, self.owner), protocol)
                state_key = _STATE + key.encode("utf-8", "surrogatepass")
                states.setdefault(topic, []).append(
                    (state_key, record, partition_of(key, partitions))
                )
            elif step_id in self._reader:
                p = int(key.partition("-")[0])
                self._reader_state[(step_id, p)] = data
            elif step_id in self._inputs and data is not None:
                index, _, topic = key.partition("-")
                offsets.append(TopicPartition(topic, int(index), self._serde.de(data)))
        self._check_owner()
        self._write("changelog", states)
        markers: dict[str, list[tuple[bytes, bytes, int]]] = {}
        marker_key = _MARKER + self.owner.encode()
        for cut, p in self._parts:
            primary = next(iter(cut.changelogs.values()))
            kinds = {step_id: self._kinds[step_id] for step_id in cut.changelogs}
            kinds.update(self._restored_kinds.get((cut.reader_id, p), {}))
            reader = self._reader_state.get((cut.reader_id, p))
            marker = dumps((epoch, reader, self.owner, kinds), protocol)
            markers.setdefault(primary, []).append((marker_key, marker, p))
        self._write("commit markers", markers)
        if offsets:
            self._commit_offsets(offsets)
        self.committed = epoch

    def _check_owner(self) -> None:
        """Ask the group whether this copy still owns its partitions, before writing.

        A commit of offsets is refused to a member the group has given up
        on, so this copy commits its repartition partitions' read offsets
        (which nothing restores from; they show its lag) first: a copy that
        stalled past the session timeout learns it is a zombie here
        (`PartitionsLost`) and writes nothing, rather than counting on the
        fencing of restores alone.
        """
        probe: list[TopicPartition] = []
        for cut, p in self._parts:
            snapshot = self._reader_state.get((cut.reader_id, p))
            offset = self._serde.de(snapshot)[0] if snapshot is not None else 0
            probe.append(TopicPartition(cut.repartition_topic, p, offset))
        if probe:
            self._commit_offsets(probe)

    def close(self) -> None:
        for writer in self._writers.values():
            # What is still in flight belongs to a commit that failed: its
            # marker was never written, so a restore ignores it anyway.
            with contextlib.suppress(KafkaConnectorError):
                writer.close()
