"""The Kafka test fixtures themselves: the broker answers, the helpers round-trip.

No aiowax code runs here: if these fail, the broker or the helpers of
``conftest.py`` / ``kafka_helpers.py`` are at fault, not the connector.
"""

from __future__ import annotations

from kafka_helpers import KafkaHelper


def test_broker_round_trip_across_partitions(kafka: KafkaHelper) -> None:
    topic = kafka.create_topic(partitions=3)
    assert kafka.partition_count(topic) == 3
    for p in range(3):
        kafka.produce(
            topic,
            [(b"k%d" % p, b"p%d-%d" % (p, i)) for i in range(5)],
            partition=p,
            timestamp_ms=1_700_000_000_000 + p,
            headers=[("h", b"v")],
        )
    records = kafka.consume(topic, 15)
    assert len(records) == 15
    for p in range(3):
        mine = [r for r in records if r.partition == p]
        assert [r.value for r in mine] == [b"p%d-%d" % (p, i) for i in range(5)]
        assert [r.offset for r in mine] == list(range(5))
        assert {r.key for r in mine} == {b"k%d" % p}
        assert {r.timestamp_ms for r in mine} == {1_700_000_000_000 + p}
        assert all(r.headers == [("h", b"v")] for r in mine)


def test_topic_names_are_unique(kafka: KafkaHelper) -> None:
    first, second = kafka.create_topic(), kafka.create_topic()
    assert first != second
    kafka.produce(second, [(None, b"only")])
    assert [r.value for r in kafka.consume(second, 1)] == [b"only"]
    assert kafka.consume(first, 1, timeout=0.5) == []
