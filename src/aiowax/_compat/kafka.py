"""Bytewax 0.17.2's `KafkaInput` and `KafkaOutput` (needs the ``aiowax[kafka]`` extra)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiowax._compat.adapt import build_now
from aiowax._compat.inputs import PartitionedInput
from aiowax._compat.outputs import DynamicOutput
from aiowax._connectors.kafka import OFFSET_BEGINNING, KafkaSink, KafkaSource
from aiowax._definition.inputs import StatefulSourcePartition


class KafkaInput(PartitionedInput, KafkaSource):
    """Bytewax 0.17.2's name for `aiowax.connectors.kafka.KafkaSource`.

    Reads ``(key_bytes, value_bytes)`` items, one partition per Kafka
    partition, named ``f"{partition}-{topic}"``, with 0.17.2's arguments and
    defaults (one message per batch unless ``batch_size`` says more).

    Args:
        brokers: ``host:port`` of the bootstrap brokers.
        topics: The topics to read.
        tail: Keep reading new messages at the end of each partition
            (``True``), or end the input at the end of every partition.
        starting_offset: `aiowax.connectors.kafka.OFFSET_BEGINNING` or
            `aiowax.connectors.kafka.OFFSET_END`, for partitions with no
            resume state.
        add_config: More librdkafka settings; see docs/kafka.md.
        batch_size: The most messages one batch takes.
    """

    def __init__(
        self,
        brokers: Iterable[str],
        topics: Iterable[str],
        tail: bool = True,
        starting_offset: int = OFFSET_BEGINNING,
        add_config: Mapping[str, Any] | None = None,
        batch_size: int = 1,
    ) -> None:
        KafkaSource.__init__(self, brokers, topics, tail, starting_offset, add_config, batch_size)

    def list_parts(self) -> list[str]:
        """Ask the brokers for the partitions: ``f"{partition}-{topic}"`` each."""
        return KafkaSource.list_parts(self)

    def build_part(  # type: ignore[override]
        self, for_part: str, resume_state: int | None
    ) -> StatefulSourcePartition[Any, int]:
        """Make the consumer of one partition, assigned at its resume offset."""
        return KafkaSource.build_part(self, build_now(), for_part, resume_state)


class KafkaOutput(DynamicOutput, KafkaSink):
    """Bytewax 0.17.2's name for `aiowax.connectors.kafka.KafkaSink`: write ``(key, value)`` items.

    Args:
        brokers: ``host:port`` of the bootstrap brokers.
        topic: The topic to write to.
        add_config: More librdkafka settings; see docs/kafka.md.
    """

    def __init__(
        self, brokers: Iterable[str], topic: str, add_config: Mapping[str, Any] | None = None
    ) -> None:
        KafkaSink.__init__(self, brokers, topic, add_config)
