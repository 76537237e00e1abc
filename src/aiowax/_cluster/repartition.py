"""The exchange between copies: repartition topics, and the sources a copy is assigned.

Before a keyed step, items go to the topic ``{app}-{step}-repartition``, to
the partition their key hashes to (`aiowax._keys.stable_hash`, as the
in-process exchange places keys on workers). The copy that Kafka assigns a
partition of that topic runs the keyed step for its keys. It is the Kafka
implementation of the engine's exchange: the in-process one moves batches
between workers of one process, this one between processes and machines.

A record's key is the item's key (UTF-8); its value is the pickled
``(origin, offset, number, value)``: origin and offset of the source
message the item came from (or ``("", -1)`` for a source without offsets),
and its number among the items of that message. The reader keeps, per
origin, the newest ``(offset, number)`` it passed on, and drops a record at
or below it: a source partition reread after a failover sends again what
its old owner had sent, and the keyed step applies each item once.
"""

from __future__ import annotations

import pickle
from datetime import datetime
from typing import Any

from aiowax._cluster.config import KafkaCluster
from aiowax._connectors.kafka.sink import _KafkaSinkPartition
from aiowax._connectors.kafka.source import KafkaSource, _KafkaSourcePartition
from aiowax._definition.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax._definition.outputs import DynamicSink
from aiowax._keys import as_keyed_item, bad_item_error, stable_hash

#: Per origin, the newest ``(offset, number)`` passed on.
Seen = dict[str, tuple[int, int]]
#: A repartition reader's resume state: the next offset, and what it has seen.
ReaderState = tuple[int, Seen]

#: The origin of items from a source without offsets (read by every copy).
NO_ORIGIN = ""


def partition_of(key: str, partitions: int) -> int:
    """The partition of a repartition or changelog topic that holds ``key``."""
    return stable_hash(key) % partitions


class _RepartitionPart(_KafkaSinkPartition):
    """One copy's producer to a repartition topic; numbers the items of each origin."""

    def __init__(self, sink: RepartitionSink) -> None:
        config = {
            **sink.cluster.add_config,
            # Records of one origin must land in the order they were sent,
            # or the reader's duplicate check would drop a newer one.
            "enable.idempotence": True,
            "linger.ms": 5,
        }
        super().__init__(list(sink.cluster.brokers), sink.topic, config)
        self._sink = sink
        self._last: Seen = {}

    def _produce(self, items: list[Any]) -> None:
        sink = self._sink
        partitions, tagged, last = sink.partitions, sink.tagged, self._last
        dumps, protocol = pickle.dumps, pickle.HIGHEST_PROTOCOL
        records: list[tuple[bytes, bytes, int]] = []
        for item in items:
            if tagged:
                origin, offset, value = item
                seen = last.get(origin)
                number = seen[1] + 1 if seen is not None and seen[0] == offset else 0
                last[origin] = (offset, number)
            else:
                origin, offset, number, value = NO_ORIGIN, -1, 0, item
            pair = as_keyed_item(value)
            if pair is None:
                raise bad_item_error(sink.keyed_step_id, value)
            key, inner = pair
            data = dumps((origin, offset, number, inner), protocol)
            records.append(
                (key.encode("utf-8", "surrogatepass"), data, partition_of(key, partitions))
            )
        self._produce_records(records)
        self._served()


class RepartitionSink(DynamicSink[Any]):
    """Sends each item to the partition of ``topic`` its key hashes to."""

    #: The kind its step has in the stats: not one of the flow's outputs.
    _aiowax_stats_kind = "repartition_out"

    def __init__(
        self, cluster: KafkaCluster, topic: str, partitions: int, keyed_step_id: str, tagged: bool
    ) -> None:
        self.cluster = cluster
        self.topic = topic
        self.partitions = partitions
        self.keyed_step_id = keyed_step_id
        self.tagged = tagged

    def build(self, worker_index: int, worker_count: int) -> _RepartitionPart:
        return _RepartitionPart(self)


class _RepartitionReader(StatefulSourcePartition[Any, ReaderState]):
    """One assigned partition of a repartition topic: ``(key, value)`` items, each once."""

    def __init__(self, inner: _KafkaSourcePartition, seen: Seen) -> None:
        self._inner = inner
        self._seen = seen

    def _decode(self, records: list[Any]) -> list[Any]:
        seen, loads = self._seen, pickle.loads
        out: list[Any] = []
        for key, data in records:
            origin, offset, number, value = loads(data)
            if origin != NO_ORIGIN:
                last = seen.get(origin)
                if last is not None and (offset, number) <= last:
                    continue  # sent again after a failover: applied already
                seen[origin] = (offset, number)
            out.append((key.decode("utf-8", "surrogatepass"), value))
        return out

    def next_batch(self, sched: datetime | None = None) -> list[Any]:
        return self._decode(self._inner.next_batch(sched))

    async def _aiowax_anext_batch(self, sched: datetime | None) -> list[Any]:
        return self._decode(await self._inner._aiowax_anext_batch(sched))

    def snapshot(self) -> ReaderState:
        return (self._inner.snapshot(), dict(self._seen))

    def close(self) -> None:
        self._inner.close()


class RepartitionSource(FixedPartitionedSource[Any, ReaderState]):
    """The partitions of a repartition topic assigned to this copy."""

    #: The kind its step has in the stats: not one of the flow's inputs.
    _aiowax_stats_kind = "repartition_in"

    def __init__(self, cluster: KafkaCluster, topic: str, assigned: list[int]) -> None:
        self._topic = topic
        self._assigned = sorted(assigned)
        self._reader = KafkaSource(
            list(cluster.brokers), [topic], tail=True, add_config=dict(cluster.add_config)
        )

    def list_parts(self) -> list[str]:
        return [f"{p}-{self._topic}" for p in self._assigned]

    def build_part(
        self, now: datetime, for_part: str, resume_state: ReaderState | None
    ) -> _RepartitionReader:
        offset, seen = resume_state if resume_state is not None else (None, {})
        index = int(for_part.partition("-")[0])
        inner = _KafkaSourcePartition(self._reader, self._topic, index, offset)
        return _RepartitionReader(inner, dict(seen))


class AssignedKafkaSource(FixedPartitionedSource[Any, int]):
    """A user's `KafkaSource`, limited to the partitions assigned to this copy.

    With ``tagged``, its items carry their origin (`aiowax._cluster.tagging`).
    """

    def __init__(self, source: KafkaSource, assigned: list[str], tagged: bool) -> None:
        self._source = source
        self._assigned = assigned
        self._tagged = tagged

    def list_parts(self) -> list[str]:
        return list(self._assigned)

    def build_part(
        self, now: datetime, for_part: str, resume_state: int | None
    ) -> _KafkaSourcePartition:
        index, _, topic = for_part.partition("-")
        origin = for_part if self._tagged else None
        return _KafkaSourcePartition(self._source, topic, int(index), resume_state, origin=origin)
