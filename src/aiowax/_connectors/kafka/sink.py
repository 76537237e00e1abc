"""`KafkaSink`: produce ``(key, value)`` items to one topic, each batch flushed before it counts."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from aiowax._checks import non_empty_str
from aiowax._connectors.kafka.client import describe_error
from aiowax._connectors.kafka.config import (
    COMMON_KEYS,
    PRODUCER_DEFAULTS,
    PRODUCER_KEYS,
    ConfigValue,
    check_add_config,
    str_iterable,
)
from aiowax._connectors.kafka.message import to_record
from aiowax._connectors.threaded import ThreadedWrites
from aiowax._definition.outputs import DynamicSink, StatelessSinkPartition
from aiowax._errors import KafkaConnectorError

#: How long one flush call waits before the sink checks for fatal errors.
_FLUSH_STEP_S = 1.0


class _KafkaSinkPartition(ThreadedWrites, StatelessSinkPartition[Any]):
    """One worker's producer; ``write_batch`` produces and waits for every delivery.

    ``write_batch`` raises `KafkaConnectorError` when a message was refused
    or not delivered (naming the topic and the first error), and `TypeError`
    for an item that is not a ``(key, value)`` pair of bytes, str or None,
    nor a `KafkaMessage`.
    """

    def __init__(self, brokers: list[str], topic: str, add_config: dict[str, ConfigValue]) -> None:
        self._topic = topic
        self._brokers = ",".join(brokers)
        self._client_errors: list[KafkaError] = []
        config: dict[str, Any] = {
            **PRODUCER_DEFAULTS,
            "bootstrap.servers": self._brokers,
            **add_config,
            "error_cb": self._client_errors.append,
        }
        self._producer = confluent_kafka.Producer(config)

    def _fail(self, what: str) -> KafkaConnectorError:
        msg = f"KafkaSink: topic {self._topic!r} (brokers {self._brokers}): {what}"
        return KafkaConnectorError(msg)

    def _check_fatal(self) -> None:
        errors, self._client_errors[:] = list(self._client_errors), []
        for error in errors:
            if error.fatal():
                raise self._fail(f"the Kafka producer failed: {describe_error(error)}")

    def _write(self, items: list[Any]) -> None:
        topic = self._topic
        # Encode everything first: a bad item fails the batch before any is sent.
        records = [to_record(topic, item) for item in items]
        failed: list[KafkaError] = []

        def on_delivery(error: KafkaError | None, _msg: Any) -> None:
            if error is not None:
                failed.append(error)

        producer = self._producer
        refused: KafkaException | None = None
        for key, value, headers, ts in records:
            try:
                while True:
                    try:
                        producer.produce(
                            topic,
                            value,
                            key,
                            on_delivery=on_delivery,
                            timestamp=ts,
                            headers=headers,
                        )
                        break
                    except BufferError:
                        # The local queue is full: let deliveries drain it.
                        producer.poll(0.1)
            except KafkaException as exc:
                refused = exc
                break
        # Wait for every delivery (or failure: message.timeout.ms bounds it).
        while producer.flush(_FLUSH_STEP_S) > 0:
            self._check_fatal()
        self._check_fatal()
        if refused is not None:
            raise self._fail(f"a message was refused: {describe_error(refused.args[0])}")
        if failed:
            raise self._fail(
                f"{len(failed)} of {len(records)} messages could not be delivered: "
                f"{describe_error(failed[0])}"
            )

    def close(self) -> None:
        # write_batch flushed already; this only bounds what a failure left.
        self._producer.flush(_FLUSH_STEP_S)


class KafkaSink(DynamicSink[Any]):
    """Write ``(key, value)`` items to a Kafka topic, one producer per worker.

    Keys and values may be bytes, str (encoded as UTF-8) or None. A
    `KafkaMessage` item is written with its key, value, headers and
    timestamp. Each batch is flushed: ``write_batch`` returns once the
    brokers acknowledged every message (``acks`` as configured; librdkafka's
    default is all in-sync replicas), so with recovery the sink delivers at
    least once.

    Args:
        brokers: ``host:port`` of the bootstrap brokers.
        topic: The topic to write to.
        add_config: More librdkafka settings (security, ``linger.ms``,
            ``compression.type``, ``enable.idempotence``,
            ``message.timeout.ms``...); see docs/kafka.md for the accepted
            keys. A message not delivered within ``message.timeout.ms``
            (30 s unless set here) fails the flow.
    """

    def __init__(
        self, brokers: Iterable[str], topic: str, add_config: Mapping[str, Any] | None = None
    ) -> None:
        self._brokers = str_iterable("KafkaSink", "brokers", brokers)
        self._topic = non_empty_str("KafkaSink", "topic", topic)
        self._add_config = check_add_config("KafkaSink", add_config, COMMON_KEYS | PRODUCER_KEYS)

    def build(self, worker_index: int, worker_count: int) -> _KafkaSinkPartition:
        """Make this worker's producer."""
        return _KafkaSinkPartition(self._brokers, self._topic, self._add_config)
