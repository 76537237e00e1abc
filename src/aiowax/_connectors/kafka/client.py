"""What the connectors ask of librdkafka: client settings, partition listing, error triage."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException

from aiowax._connectors.kafka.config import CONSUMER_DEFAULTS, ConfigValue
from aiowax._errors import KafkaConnectorError

#: librdkafka's own log lines (a refused connection, a protocol warning) go
#: to this logger rather than straight to stderr, where they would bypass
#: the application's logging set-up, ``--log-level`` and the progress line.
#: Every Kafka client aiowax makes, connectors and cluster mode, gets it.
LIBRDKAFKA_LOGGER = logging.getLogger("aiowax.kafka.librdkafka")

#: Client errors that librdkafka retries by itself: the connector waits for
#: them to clear, up to the source's ``timeout``.
TRANSIENT_CODES = frozenset(
    {
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
    }
)


def consumer_config(
    brokers: list[str],
    add_config: dict[str, ConfigValue],
    on_error: Callable[[KafkaError], None],
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """The settings of a source's consumer: defaults, brokers, then ``add_config``.

    With the source's ``timeout_s``, requests time out after half of it
    (at least 1.5 s, at most librdkafka's 60 s default): a network that
    drops packets without a word (no refusal, no reset) reports no error
    until a request times out, so with the 60 s default the source's
    timeout never started.
    """
    socket_timeout = {}
    if timeout_s is not None:
        # librdkafka wants it above the longest fetch wait by a second.
        fetch_wait = add_config.get("fetch.wait.max.ms", 500)
        floor = int(fetch_wait) + 1_000 if isinstance(fetch_wait, int | str) else 1_500
        half = int(min(60_000, timeout_s * 500))
        socket_timeout["socket.timeout.ms"] = max(1_500, floor, half)
    return {
        **CONSUMER_DEFAULTS,
        "bootstrap.servers": ",".join(brokers),
        **socket_timeout,
        **add_config,
        "error_cb": on_error,
        "logger": LIBRDKAFKA_LOGGER,
    }


def describe_error(error: KafkaError | None) -> str:
    """``"NAME: description"`` for a client error, or a generic phrase."""
    if error is None:
        return "no error reported"
    return f"{error.name()}: {error.str()}"


def is_transient(error: KafkaError) -> bool:
    """True for an error librdkafka recovers from by itself (a lost connection...)."""
    if error.fatal():
        return False
    return error.code() in TRANSIENT_CODES or (
        error.retriable() and error.code() != KafkaError._AUTHENTICATION
    )


def list_partitions(
    brokers: list[str],
    topics: list[str],
    add_config: dict[str, ConfigValue],
    timeout_s: float,
) -> list[str]:
    """Return ``f"{partition}-{topic}"`` for every partition of every topic, in order.

    Raises:
        KafkaConnectorError: The brokers did not answer within ``timeout_s``,
            or a topic is unknown to them (or not readable).
    """
    errors: list[KafkaError] = []
    consumer = confluent_kafka.Consumer(consumer_config(brokers, add_config, errors.append))
    try:
        parts: list[str] = []
        for topic in topics:
            # One topic at a time, so an error names the topic it is about.
            try:
                metadata = consumer.list_topics(topic, timeout=timeout_s)
            except KafkaException as exc:
                last = describe_error(errors[-1]) if errors else describe_error(exc.args[0])
                msg = (
                    f"KafkaSource: cannot list the partitions of topic {topic!r}: the "
                    f"brokers {','.join(brokers)} did not answer within {timeout_s:g} s "
                    f"({last})"
                )
                raise KafkaConnectorError(msg) from None
            topic_md = metadata.topics.get(topic)
            error = None if topic_md is None else topic_md.error
            if topic_md is None or error is not None:
                if error is None or error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    msg = (
                        f"KafkaSource: unknown topic {topic!r}: the brokers "
                        f"{','.join(brokers)} have no such topic (create it first; "
                        "the source does not create topics)"
                    )
                else:
                    msg = (
                        f"KafkaSource: cannot list the partitions of topic {topic!r}: "
                        f"{describe_error(error)}"
                    )
                raise KafkaConnectorError(msg)
            parts.extend(f"{index}-{topic}" for index in sorted(topic_md.partitions))
        return parts
    finally:
        consumer.close()
