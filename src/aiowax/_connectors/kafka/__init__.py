"""The Kafka connectors (`aiowax.connectors.kafka`), on confluent-kafka (librdkafka).

``config`` checks arguments and holds the librdkafka settings and the
allow-list of ``add_config`` keys; ``client`` lists partitions and sorts
client errors; ``source`` and ``sink`` are the connectors; ``message`` is
`KafkaMessage` and the sink's item encoding.
"""

from aiowax._connectors.kafka.config import OFFSET_BEGINNING, OFFSET_END
from aiowax._connectors.kafka.message import KafkaMessage
from aiowax._connectors.kafka.sink import KafkaSink
from aiowax._connectors.kafka.source import KafkaSource

__all__ = ["OFFSET_BEGINNING", "OFFSET_END", "KafkaMessage", "KafkaSink", "KafkaSource"]
