"""`KafkaMessage`: one consumed record with its metadata, and the sink's item encoding."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import confluent_kafka

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class KafkaMessage:
    """A Kafka record: what ``KafkaSource(..., messages=True)`` emits.

    `KafkaSink` takes one as an item too: it writes its key, value, headers
    and timestamp to the sink's topic (its topic, partition and offset are
    ignored).

    Attributes:
        key: The record's key, or ``None``.
        value: The record's value, or ``None`` (a tombstone).
        topic: The topic it was read from.
        partition: The partition it was read from.
        offset: Its offset in that partition.
        timestamp: Its Kafka timestamp (create or log-append time, as the
            topic says), timezone-aware in UTC, to the millisecond; ``None``
            when the record has none.
        headers: Its headers, in order, as ``(name, value)`` pairs; a header
            value may be ``None``.
    """

    key: bytes | None
    value: bytes | None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    timestamp: datetime | None = None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)


def _timestamp(msg: confluent_kafka.Message[Any, Any]) -> datetime | None:
    kind, ms = msg.timestamp()
    if kind == confluent_kafka.TIMESTAMP_NOT_AVAILABLE or ms < 0:
        return None
    return _EPOCH + timedelta(milliseconds=ms)


def to_message(msg: confluent_kafka.Message[Any, Any]) -> KafkaMessage:
    """Convert a consumed confluent-kafka message (one without an error)."""
    headers = msg.headers()
    return KafkaMessage(
        key=msg.key(),
        value=msg.value(),
        topic=msg.topic() or "",
        partition=msg.partition() or 0,
        offset=msg.offset() or 0,
        timestamp=_timestamp(msg),
        headers=_headers(headers) if headers else [],
    )


def _headers(headers: Any) -> list[tuple[str, bytes | None]]:
    pairs = headers.items() if isinstance(headers, dict) else headers
    return [(str(k), v.encode("utf-8") if isinstance(v, str) else v) for k, v in pairs]


def _encode(topic: str, what: str, data: object) -> bytes | None:
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    msg = (
        f"KafkaSink to topic {topic!r}: the {what} must be bytes, str or None, "
        f"got {type(data).__name__}: {data!r}"
    )
    raise TypeError(msg)


#: What the sink hands to ``Producer.produce``: key, value, headers, timestamp (ms, 0 = none).
Record = tuple[bytes | None, bytes | None, list[tuple[str, str | bytes | None]] | None, int]


def to_record(topic: str, item: Any) -> Record:
    """Encode one sink item: a ``(key, value)`` pair or a `KafkaMessage`.

    Raises:
        TypeError: Any other item, or a key or value that is not bytes, str
            or None; the message names the topic.
    """
    if isinstance(item, KafkaMessage):
        ts = 0
        if item.timestamp is not None:
            ts = (item.timestamp - _EPOCH) // timedelta(milliseconds=1)
        headers: list[tuple[str, str | bytes | None]] | None = list(item.headers) or None
        return (_encode(topic, "key", item.key), _encode(topic, "value", item.value), headers, ts)
    if not issubclass(type(item), tuple) or len(item) != 2:
        msg = (
            f"KafkaSink to topic {topic!r}: items must be (key, value) tuples or "
            f"KafkaMessage objects, got {type(item).__name__}: {item!r}"
        )
        raise TypeError(msg)
    key, value = item
    return (_encode(topic, "key", key), _encode(topic, "value", value), None, 0)
