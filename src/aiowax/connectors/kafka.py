"""Kafka topics as sources and sinks, on confluent-kafka (librdkafka).

Install with the extra: ``pip install '.[kafka]'`` in the checkout. `KafkaSource` reads
one aiowax partition per Kafka partition and resumes each at the offset
after the last committed epoch (offsets live in aiowax's recovery, not in a
consumer group); `KafkaSink` produces ``(key, value)`` items and waits for
every delivery of a batch. In a flow, the blocking client calls run in
worker threads. See docs/kafka.md for the settings, recovery and delivery
guarantees. `KafkaInput` and `KafkaOutput` are Bytewax 0.17.2's names, with
its arguments and defaults.
"""

from aiowax._compat.kafka import KafkaInput, KafkaOutput
from aiowax._connectors.kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    KafkaMessage,
    KafkaSink,
    KafkaSource,
)
from aiowax._errors import KafkaConnectorError
from aiowax._util import fixup_module_metadata

__all__ = [
    "OFFSET_BEGINNING",
    "OFFSET_END",
    "KafkaConnectorError",
    "KafkaInput",
    "KafkaMessage",
    "KafkaOutput",
    "KafkaSink",
    "KafkaSource",
]

fixup_module_metadata(__name__, __all__, globals())
