"""Kafka helpers of the connector tests, independent of the code under test.

`KafkaHelper` creates topics explicitly (unique names per test), produces
with confluent-kafka and reads topics back with its own consumer (manual
assignment of every partition from offset 0, until a count or a timeout:
Tansu gets ListOffsets(latest) wrong). The ``kafka`` fixture of
``conftest.py`` gives one per test.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def free_port() -> int:
    """A loopback port free right now (nothing listens on it once this returns)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_topic_counter = itertools.count()


@dataclass(frozen=True)
class Record:
    """A message read back by `KafkaHelper.consume`."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: list[tuple[str, bytes | None]]


class KafkaHelper:
    """Topics, a producer and an independent consumer on one broker."""

    def __init__(self, bootstrap: str, test_name: str) -> None:
        self.bootstrap = bootstrap
        self._prefix = re.sub(r"[^A-Za-z0-9_-]", "-", test_name)[:60]
        self.created: list[str] = []

    def topic_name(self, label: str = "t") -> str:
        """A topic name unique in the session (not created)."""
        return f"aiowax-{self._prefix}-{label}-{os.getpid()}-{next(_topic_counter)}"

    def create_topic(self, partitions: int = 1, label: str = "t") -> str:
        """Create a topic with ``partitions`` partitions explicitly; return its name."""
        return self.create_topic_named(self.topic_name(label), partitions)

    def create_topic_named(self, name: str, partitions: int = 1) -> str:
        """Create topic ``name`` (deleted at the end of the test); return its name."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})  # alive until resolved
        futures = admin.create_topics([NewTopic(name, partitions, 1)], operation_timeout=10)
        futures[name].result(15)
        del admin
        self.created.append(name)
        return name

    def delete_topics(self) -> None:
        if not self.created:
            return
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.delete_topics(self.created, operation_timeout=10)
        for future in futures.values():
            with contextlib.suppress(Exception):  # a leftover topic only costs memory
                future.result(15)
        del admin
        self.created.clear()

    def produce(
        self,
        topic: str,
        items: Iterable[tuple[bytes | None, bytes | None]],
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> int:
        """Produce ``(key, value)`` items in order, flush, check every delivery.

        Returns the number of messages delivered. With ``partition`` every
        message goes there; else the key picks the partition (murmur2).
        """
        from confluent_kafka import Producer

        errors: list[Any] = []
        delivered = 0

        def on_delivery(err: Any, msg: Any) -> None:
            nonlocal delivered
            if err is not None:
                errors.append(err)
            else:
                delivered += 1

        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "linger.ms": 5,
                "acks": "all",
                "partitioner": "murmur2_random",
                "enable.idempotence": False,
            }
        )
        count = 0
        for key, value in items:
            kwargs: dict[str, Any] = {"key": key, "value": value, "on_delivery": on_delivery}
            if partition is not None:
                kwargs["partition"] = partition
            if timestamp_ms is not None:
                kwargs["timestamp"] = timestamp_ms
            if headers is not None:
                kwargs["headers"] = headers
            while True:
                try:
                    producer.produce(topic, **kwargs)
                    break
                except BufferError:
                    producer.poll(0.01)
            count += 1
        left = producer.flush(20)
        if errors or left or delivered != count:
            msg = f"produce to {topic}: delivered {delivered}/{count}, left {left}: {errors[:3]}"
            raise RuntimeError(msg)
        return delivered

    def produce_at(self, topic: str, partition: int, items: Iterable[tuple[Any, ...]]) -> None:
        """Produce ``(key, value, timestamp_ms)`` items one by one to ``partition``."""
        for key, value, ts in items:
            self.produce(topic, [(key, value)], partition=partition, timestamp_ms=ts)

    def consume(
        self, topic: str, count: int, *, partitions: int | None = None, timeout: float = 10.0
    ) -> list[Record]:
        """Read ``topic`` from offset 0 of every partition until ``count`` messages.

        Independent of the code under test: manual assignment, no group, no
        commit. Returns fewer than ``count`` records if the timeout passes
        first; then waits a little for extra messages past ``count`` so a test
        can see duplicates it did not expect.
        """
        from confluent_kafka import Consumer, TopicPartition

        if partitions is None:
            partitions = self.partition_count(topic)
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": "aiowax-tests-unused",  # manual assign: never joins or commits
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "fetch.wait.max.ms": 100,
                "fetch.queue.backoff.ms": 10,
            }
        )
        out: list[Record] = []
        try:
            consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
            deadline = time.monotonic() + timeout
            extra_until: float | None = None
            while time.monotonic() < deadline:
                if len(out) >= count:
                    if extra_until is None:
                        extra_until = time.monotonic() + 0.3
                    elif time.monotonic() >= extra_until:
                        break
                for m in consumer.consume(num_messages=1000, timeout=0.1):
                    if m.error():
                        raise RuntimeError(f"consume {topic}: {m.error()}")
                    ts_type, ts = m.timestamp()
                    out.append(
                        Record(
                            m.topic(),
                            m.partition(),
                            m.offset(),
                            m.key(),
                            m.value(),
                            ts if ts_type != 0 else None,
                            list(m.headers() or []),
                        )
                    )
        finally:
            consumer.close()
        return out

    def partition_count(self, topic: str) -> int:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        md = admin.list_topics(topic, timeout=10)
        return len(md.topics[topic].partitions)
