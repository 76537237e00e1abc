"""What the connectors ask of librdkafka: client settings, partition listing, error triage."""

from __future__ import annotations

import logging
import re
import threading
import time
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

#: Seconds during which a client's line like one already let through is held
#: back (counted, and the count said with the next one let through).
REPEAT_WINDOW_S = 30.0


class RepeatFilter(logging.Filter):
    """Lets one line of a kind per client through every `REPEAT_WINDOW_S`.

    While brokers are down, every client retries its connections and says
    so each time: a cluster copy's clients logged about 1,100 lines in
    10 s at ERROR. Lines are alike when their client, facility and text
    are, but for the durations in it (a broker's or a topic's name counts).
    The first line of a kind that comes once the window has passed carries
    how many were held back (if none comes, the count is not said).
    librdkafka's lines arrive on its clients' threads: the counts are kept
    under a lock.
    """

    #: Kinds remembered at most: past it the oldest half goes.
    LIMIT = 1024
    #: What may differ between lines alike: durations ("after 14412ms").
    _DURATIONS = re.compile(r"\b\d+(?:\.\d+)?\s?m?s\b")

    def __init__(
        self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        # kind -> (when its last line was let through, lines held back since)
        self._seen: dict[tuple[str, ...], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if not (isinstance(args, tuple) and len(args) == 3):
            return True  # not one of librdkafka's "%s [%s] %s" lines
        fac, name, text = (str(arg) for arg in args)
        kind = (name, fac, self._DURATIONS.sub("#", text))
        now = self._clock()
        with self._lock:
            seen = self._seen.get(kind)
            if seen is not None and now - seen[0] < self.window_s:
                self._seen[kind] = (seen[0], seen[1] + 1)
                return False
            if len(self._seen) >= self.LIMIT:
                for old in list(self._seen)[: self.LIMIT // 2]:
                    del self._seen[old]
            self._seen[kind] = (now, 0)
        if seen is not None and seen[1]:
            since, held = seen
            said = f"{text} (and {held} more like it in the {now - since:.0f} s before, not shown)"
            record.args = (fac, name, said)
        return True


LIBRDKAFKA_LOGGER.addFilter(RepeatFilter())

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
