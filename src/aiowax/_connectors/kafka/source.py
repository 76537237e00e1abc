"""`KafkaSource`: one resumable partition per Kafka partition, read by a hand-assigned consumer.

Each partition owns one confluent-kafka ``Consumer``, assigned to its one
``TopicPartition`` at the offset to resume from; no consumer group is
joined and nothing is committed to Kafka: the offset lives in aiowax's
recovery snapshots. In a flow the blocking client calls run in a worker
thread (``_aiowax_anext_batch``), a short step at a time, so the event
loop never waits on the network and a cancelled run never waits long.

The end of a partition (``tail=False``) and the start of ``OFFSET_END`` use
the high-water mark that fetch responses carry (``get_watermark_offsets(...,
cached=True)``), not a ListOffsets request: Tansu answers ListOffsets
(latest) wrongly, and a fetch's high-water mark is right on every broker.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

import confluent_kafka
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from aiowax._checks import positive_int
from aiowax._connectors.kafka.client import (
    consumer_config,
    describe_error,
    is_transient,
    list_partitions,
)
from aiowax._connectors.kafka.config import (
    COMMON_KEYS,
    CONSUMER_KEYS,
    OFFSET_BEGINNING,
    OFFSET_END,
    ConfigValue,
    check_add_config,
    check_bool,
    check_starting_offset,
    check_timeout,
    str_iterable,
)
from aiowax._connectors.kafka.message import to_message
from aiowax._definition.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax._engine.clock import run_in_thread
from aiowax._errors import KafkaConnectorError

#: The longest one read blocks its worker thread waiting for a message.
_WAIT_S = 0.1
#: How often a source in trouble asks the brokers whether they are back.
_PROBE_EVERY_S = 1.0


class _KafkaSourcePartition(StatefulSourcePartition[Any, int]):
    """One Kafka partition; the state is the offset of the next message to read."""

    def __init__(
        self,
        source: KafkaSource,
        topic: str,
        index: int,
        resume_state: int | None,
        *,
        origin: str | None = None,
    ) -> None:
        self._topic, self._index = topic, index
        #: Cluster mode: emit ``(origin, offset, item)`` (see aiowax._cluster.tagging).
        self._origin = origin
        self._where = f"KafkaSource: topic {topic!r} partition {index}"
        self._brokers = ",".join(source._brokers)
        self._batch_size = source._batch_size
        self._messages = source._messages
        self._timeout_s = source._timeout_s
        if resume_state is not None and (
            isinstance(resume_state, bool) or not isinstance(resume_state, int)
        ):
            msg = f"{self._where}: the resume state must be an int offset, got {resume_state!r}"
            raise TypeError(msg)
        start = source._starting_offset if resume_state is None else resume_state
        if start == OFFSET_BEGINNING:
            # Assigned at offset 0 rather than at the logical OFFSET_BEGINNING,
            # whose lookup delays the first fetch by about half a second per
            # partition (measured on Tansu); auto.offset.reset=earliest still
            # moves it to the oldest message if retention deleted offset 0.
            start = 0
        #: The next offset to read.
        self._offset = start
        #: tail=False: the high-water mark to stop at, once a fetch told it.
        self._end: int | None = None
        self._tail = source._tail
        self._seek_end = start == OFFSET_END
        self._done = False
        self._pending_error: BaseException | None = None
        self._client_errors: list[KafkaError] = []
        self._trouble: KafkaError | None = None
        self._trouble_since = 0.0
        self._last_probe = 0.0
        self._started = time.monotonic()
        self._tp = TopicPartition(topic, index)
        config = consumer_config(
            source._brokers, source._add_config, self._client_errors.append, self._timeout_s
        )
        self._consumer = confluent_kafka.Consumer(config)
        try:
            self._consumer.assign([TopicPartition(topic, index, start)])
        except BaseException:
            self._consumer.close()
            raise

    # -- in the worker thread -------------------------------------------------

    def _fail(self, what: str, error: KafkaError | None) -> KafkaConnectorError:
        msg = f"{self._where} (brokers {self._brokers}): {what}: {describe_error(error)}"
        return KafkaConnectorError(msg)

    def _note_trouble(self, error: KafkaError) -> None:
        if self._trouble is None:
            self._trouble_since = time.monotonic()
        self._trouble = error

    def _check_client_errors(self) -> None:
        """Triage what the client reported since the last read (via ``error_cb``)."""
        errors, self._client_errors[:] = list(self._client_errors), []
        for error in errors:
            if not is_transient(error):
                raise self._fail("the Kafka client failed", error)
            self._note_trouble(error)
        if self._trouble is None:
            return
        now = time.monotonic()
        if now - self._trouble_since > self._timeout_s:
            what = f"the brokers have been unreachable for more than {self._timeout_s:g} s"
            raise self._fail(what, self._trouble)
        if now - self._last_probe >= _PROBE_EVERY_S:
            # librdkafka says when brokers go, not when they come back: ask.
            self._last_probe = now
            try:
                self._consumer.list_topics(self._topic, timeout=min(_WAIT_S * 5, self._timeout_s))
            except confluent_kafka.KafkaException:
                return
            self._trouble = None

    def _high_water_mark(self) -> int | None:
        """The high-water mark from the last fetch response, if one came."""
        low, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        if high >= 0:
            if not self._seek_end and low >= 0 and self._offset < low:
                # Nothing below the low mark can be read (deleted by retention).
                self._offset = low
            return high
        if time.monotonic() - self._started > self._timeout_s:
            what = (
                f"no fetch response within {self._timeout_s:g} s, so the end of the "
                "partition is unknown"
            )
            raise self._fail(what, self._trouble or self._last_error())
        return None

    def _last_error(self) -> KafkaError | None:
        return self._client_errors[-1] if self._client_errors else None

    def _consume(self) -> list[confluent_kafka.Message[Any, Any]]:
        consumer = self._consumer
        msgs = consumer.consume(self._batch_size, 0)
        if not msgs:
            first = consumer.poll(_WAIT_S)
            if first is None:
                return []
            msgs = [first]
            if self._batch_size > 1:
                msgs.extend(consumer.consume(self._batch_size - 1, 0))
        return msgs

    def _read(self) -> list[Any] | None:
        """Read the next batch; ``None`` once the partition has ended."""
        if self._pending_error is not None:
            raise self._pending_error
        if self._done:
            return None
        self._check_client_errors()
        if self._seek_end:
            # OFFSET_END: start at the high-water mark a fetch reports.
            self._consume()
            high = self._high_water_mark()
            if high is None:
                return []
            self._offset, self._seek_end = high, False
            self._consumer.assign([TopicPartition(self._topic, self._index, high)])
            if not self._tail:
                self._end = high
        if not self._tail and self._end is None:
            self._end = self._high_water_mark()
            if self._end is None:
                # No fetch answered yet. What a fetch brings is below the
                # high-water mark it reports (cached before its messages are
                # handed over), so it can go out before the end is known.
                return self._take(self._consume_past_markers())
        if self._end is not None and self._offset >= self._end:
            self._done = True
            return None
        return self._take(self._consume_past_markers())

    def _consume_past_markers(self) -> list[confluent_kafka.Message[Any, Any]]:
        """`_consume`; when nothing came, move past what the client skipped.

        A transaction's commit or abort marker takes an offset but is never
        handed over: a topic written in transactions ends with one, so the
        offset of the last message read stays below the end for good
        (``tail=False`` never ended). The consumer's position, a local
        read, has moved past the markers.
        """
        msgs = self._consume()
        if not msgs and self._pending_error is None:
            (position,) = self._consumer.position([self._tp])
            if position.offset > self._offset:
                self._offset = position.offset
        return msgs

    def _take(self, msgs: list[confluent_kafka.Message[Any, Any]]) -> list[Any]:
        items: list[Any] = []
        end = self._end
        for msg in msgs:
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if is_transient(error):
                    self._note_trouble(error)
                    continue
                # What came before the error still goes out; the next read raises.
                self._pending_error = self._fail("cannot read", error)
                break
            offset = msg.offset()
            assert offset is not None
            if end is not None and offset >= end:
                self._done = True
                break
            item = to_message(msg) if self._messages else (msg.key(), msg.value())
            items.append(item if self._origin is None else (self._origin, offset, item))
            self._offset = offset + 1
        if items:
            self._trouble = None
        if not items and self._pending_error is not None:
            raise self._pending_error
        if end is not None and self._offset >= end:
            self._done = True
        return items

    # -- the partition's methods ----------------------------------------------

    def next_batch(self, sched: datetime | None = None) -> list[Any]:
        """Read the next batch here, in the calling thread; the engine uses the async path.

        Returns an empty list when nothing is ready (after waiting up to
        0.1 s for a message).

        Raises:
            StopIteration: With ``tail=False``, once the partition's
                high-water mark from its start has been read (and on every
                later call).
            KafkaConnectorError: A fatal client error, one that persisted
                past the source's ``timeout``, or a read error.
        """
        items = self._read()
        if items is None:
            raise StopIteration
        return items

    async def _aiowax_anext_batch(self, sched: datetime | None) -> list[Any]:
        """`next_batch` in a worker thread: what the engine calls."""
        items = await run_in_thread(self._read)
        if items is None:
            raise StopAsyncIteration
        return items

    def snapshot(self) -> int:
        """The offset of the next message to read (``OFFSET_BEGINNING`` before any)."""
        return self._offset

    def _aiowax_lag(self) -> int | None:
        """Messages between the next one to read and the end of the partition.

        From the high-water mark of the last fetch (no request to a broker),
        so it is as fresh as the last read; None before a fetch told it.
        """
        try:
            _, high = self._consumer.get_watermark_offsets(self._tp, cached=True)
        except (KafkaException, RuntimeError):
            return None
        if high < 0 or self._offset < 0:
            return None
        return max(0, high - self._offset)

    def close(self) -> None:
        self._consumer.close()


class KafkaSource(FixedPartitionedSource[Any, int]):
    """Read Kafka topics: one aiowax partition per Kafka partition.

    Items are ``(key, value)`` tuples of bytes (either may be ``None``), or
    `KafkaMessage` objects with ``messages=True`` (topic, partition, offset,
    timestamp and headers too). Each partition resumes at the offset after
    the last message of the last committed epoch; with no recovery state it
    starts at ``starting_offset``. Offsets are never committed to Kafka and
    no consumer group is joined.

    Args:
        brokers: ``host:port`` of the bootstrap brokers.
        topics: The topics to read; each must exist.
        tail: Keep reading new messages at the end of each partition
            (``True``); or end each partition at the high-water mark its
            first fetch reports (``False``), and the flow once all end.
        starting_offset: `OFFSET_BEGINNING` or `OFFSET_END`, for partitions
            with no resume state.
        add_config: More librdkafka settings (security, client id, fetch
            tuning...); see docs/kafka.md for the accepted keys.
            ``group.id`` is refused.
        batch_size: The most messages one batch takes.
        messages: Emit `KafkaMessage` objects instead of ``(key, value)``.
        timeout: How long to wait for the brokers: to list the partitions,
            for a partition's first fetch, and for a lost connection to come
            back, before raising `KafkaConnectorError`.
    """

    def __init__(
        self,
        brokers: Iterable[str],
        topics: Iterable[str],
        tail: bool = True,
        starting_offset: int = OFFSET_BEGINNING,
        add_config: Mapping[str, Any] | None = None,
        batch_size: int = 1000,
        *,
        messages: bool = False,
        timeout: timedelta = timedelta(seconds=10),
    ) -> None:
        self._brokers = str_iterable("KafkaSource", "brokers", brokers)
        self._topics = str_iterable("KafkaSource", "topics", topics)
        self._tail = check_bool("KafkaSource", "tail", tail)
        self._starting_offset = check_starting_offset(starting_offset)
        self._add_config: dict[str, ConfigValue] = check_add_config(
            "KafkaSource", add_config, COMMON_KEYS | CONSUMER_KEYS
        )
        self._batch_size = positive_int("KafkaSource", "batch_size", batch_size)
        self._messages = check_bool("KafkaSource", "messages", messages)
        self._timeout_s = check_timeout("KafkaSource", timeout)

    def list_parts(self) -> list[str]:
        """Ask the brokers for the partitions: ``f"{partition}-{topic}"`` each.

        Raises:
            KafkaConnectorError: A topic is unknown, or the brokers did not
                answer within ``timeout``.
        """
        return list_partitions(self._brokers, self._topics, self._add_config, self._timeout_s)

    def build_part(
        self, now: datetime, for_part: str, resume_state: int | None
    ) -> _KafkaSourcePartition:
        """Make the consumer of one partition, assigned at its resume offset."""
        index, sep, topic = for_part.partition("-")
        if not sep or not index.isdigit() or topic not in self._topics:
            msg = (
                f"KafkaSource: unknown partition {for_part!r}: partitions are named "
                f"'{{partition}}-{{topic}}' for the topics {self._topics!r}"
            )
            raise ValueError(msg)
        return _KafkaSourcePartition(self, topic, int(index), resume_state)
