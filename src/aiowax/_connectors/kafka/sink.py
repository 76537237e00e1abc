"""`KafkaSink`: produce ``(key, value)`` items to one topic, confirmed before each epoch ends."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from aiowax._checks import non_empty_str
from aiowax._connectors.kafka.client import LIBRDKAFKA_LOGGER, describe_error
from aiowax._connectors.kafka.config import (
    COMMON_KEYS,
    PRODUCER_DEFAULTS,
    PRODUCER_KEYS,
    ConfigValue,
    check_add_config,
    str_iterable,
)
from aiowax._connectors.kafka.message import to_record
from aiowax._definition.outputs import DynamicSink, StatelessSinkPartition
from aiowax._engine.clock import run_in_thread
from aiowax._errors import KafkaConnectorError

#: How long one flush call waits before the sink checks for fatal errors.
_FLUSH_STEP_S = 1.0
#: How long ``close`` waits for deliveries still in flight (after a failure).
_CLOSE_FLUSH_S = 5.0


_PLAIN = frozenset({bytes, str, type(None)})


def _plain_pairs(items: list[Any]) -> bool:
    """Whether every item is a ``(key, value)`` tuple of bytes, str or None."""
    plain = _PLAIN
    for item in items:
        if type(item) is not tuple or len(item) != 2:
            return False
        key, value = item
        if type(key) not in plain or type(value) not in plain:
            return False
    return True


class _KafkaSinkPartition(StatelessSinkPartition[Any]):
    """One worker's producer.

    ``write_batch`` produces and waits for every delivery, so a caller
    driving the partition by hand knows its items are written. The engine
    instead calls ``_aiowax_awrite_batch``, which only hands the batch to
    the producer (in a worker thread), and ``_aiowax_aflush`` before each
    epoch end, at the end of the input and at most a second after a write:
    batches stay in flight together, and no epoch is committed before its
    messages are acknowledged.

    A write or flush raises `KafkaConnectorError` when a message was
    refused or not delivered (naming the topic and the first error), and
    `TypeError` for an item that is not a ``(key, value)`` pair of bytes,
    str or None, nor a `KafkaMessage` (before any item of its batch is
    sent).
    """

    def __init__(self, brokers: list[str], topic: str, add_config: dict[str, ConfigValue]) -> None:
        self._topic = topic
        self._brokers = ",".join(brokers)
        self._client_errors: list[KafkaError] = []
        self._failed: list[KafkaError] = []
        config: dict[str, Any] = {
            **PRODUCER_DEFAULTS,
            "bootstrap.servers": self._brokers,
            **add_config,
            "error_cb": self._client_errors.append,
            "logger": LIBRDKAFKA_LOGGER,
            # One callback for failed deliveries only: no Python call per
            # message delivered (librdkafka counts what is still in flight).
            "on_delivery": self._on_delivery,
            "delivery.report.only.error": True,
        }
        self._producer = confluent_kafka.Producer(config)

    def _on_delivery(self, error: KafkaError | None, _msg: Any) -> None:
        if error is not None:
            self._failed.append(error)

    def _fail(self, what: str) -> KafkaConnectorError:
        msg = f"KafkaSink: topic {self._topic!r} (brokers {self._brokers}): {what}"
        return KafkaConnectorError(msg)

    def _check(self) -> None:
        """Raise the first fatal client error or failed delivery reported so far."""
        errors, self._client_errors[:] = list(self._client_errors), []
        for error in errors:
            if error.fatal():
                raise self._fail(f"the Kafka producer failed: {describe_error(error)}")
        if self._failed:
            failed, self._failed[:] = list(self._failed), []
            raise self._fail(
                f"{len(failed)} message(s) could not be delivered: {describe_error(failed[0])}"
            )

    def _produce(self, items: list[Any]) -> None:
        """Hand ``items`` to the producer; returns before they are delivered."""
        topic = self._topic
        # Check everything first: a bad item fails the batch before any is
        # sent. Plain (key, value) pairs, the common case, go as they are
        # (the client encodes str as UTF-8), without a call per item here.
        if _plain_pairs(items):
            self._produce_records(items)
        else:
            self._produce_records([to_record(topic, item) for item in items])
        self._served()

    def _served(self) -> None:
        """Serve delivery reports, so a failure surfaces at the next write."""
        self._producer.poll(0)
        self._check()

    def _produce_records(self, records: list[Any]) -> None:
        topic = self._topic
        producer = self._producer
        produce = producer.produce
        for record in records:
            while True:
                try:
                    # A Record's headers and timestamp go by keyword; a pair has
                    # none; a triple names its partition (cluster mode).
                    if len(record) == 2:
                        produce(topic, record[1], record[0])
                    elif len(record) == 3:
                        produce(topic, record[1], record[0], partition=record[2])
                    else:
                        key, value, headers, ts = record
                        produce(topic, value, key, timestamp=ts, headers=headers)
                    break
                except BufferError:
                    # The producer's queue is full: wait for deliveries to
                    # drain it (the back-pressure of a slow broker).
                    producer.poll(0.1)
                    self._check()
                except KafkaException as exc:
                    raise self._fail(
                        f"a message was refused: {describe_error(exc.args[0])}"
                    ) from None

    def _confirm(self) -> None:
        """Wait until every message produced so far is acknowledged, or failed."""
        # message.timeout.ms bounds the wait for each message.
        while self._producer.flush(_FLUSH_STEP_S) > 0:
            self._check()
        self._check()

    def write_batch(self, items: list[Any]) -> None:
        """Write ``items`` and wait until the brokers acknowledged them."""
        if items:
            self._produce(items)
        self._confirm()

    async def _aiowax_awrite_batch(self, items: list[Any]) -> None:
        if items:
            await run_in_thread(self._produce, items)

    async def _aiowax_aflush(self) -> None:
        await run_in_thread(self._confirm)

    def close(self) -> None:
        """Wait a bounded time for what a failure left in flight, then release the producer."""
        left = self._producer.flush(_CLOSE_FLUSH_S)
        if left:
            raise self._fail(f"{left} message(s) still in flight at close were not delivered")

    async def _aiowax_aclose(self) -> None:
        await run_in_thread(self.close)


class KafkaSink(DynamicSink[Any]):
    """Write ``(key, value)`` items to a Kafka topic, one producer per worker.

    Keys and values may be bytes, str (encoded as UTF-8) or None. A
    `KafkaMessage` item is written with its key, value, headers and
    timestamp. In a flow, batches are produced without waiting, and every
    message is acknowledged by the brokers (``acks`` as configured;
    librdkafka's default is all in-sync replicas) before the epoch it
    belongs to ends, before the flow ends, and at most about a second after
    it was written; so with recovery the sink delivers at least once, and a
    delivery failure fails the flow, naming the topic and the step.

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
