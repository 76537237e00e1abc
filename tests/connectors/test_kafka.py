"""aiowax.connectors.kafka: KafkaSource and KafkaSink against a real broker (issue 12).

The broker is the session's Tansu (``conftest.py``; ``$KAFKA_BOOTSTRAP``
picks another). Topics are created explicitly, filled and read back with
confluent-kafka directly (``kafka_helpers.py``), independently of the code
under test. Acceptance of issue 12:

- every item of several topics and partitions arrives, in order per partition;
- a partition resumed from its snapshot continues exactly after it;
- KafkaSource -> map -> KafkaSink, read back with the independent consumer;
- ``messages=True`` items carry their metadata, and a tumbling event-time
  window on the Kafka timestamp works;
- errors: unknown topic, unreachable brokers (bounded by the kw-only
  ``timeout``), a str for ``brokers``/``topics``, an unknown ``add_config``
  key, ``group.id`` in a source's ``add_config``;
- a flow counting per key, SIGKILLed in a subprocess and resumed: every
  offset read at least once, final counts as without the crash.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import anyio
import kafka_crash_flow
import pytest
from kafka_helpers import KafkaHelper, free_port

import aiowax
from aiowax._cluster import topics
from aiowax._connectors.kafka.client import LIBRDKAFKA_LOGGER, RepeatFilter
from aiowax._connectors.kafka.message import to_record
from aiowax._connectors.kafka.sink import _KafkaSinkPartition
from aiowax.cluster import ClusterError, KafkaCluster
from aiowax.connectors.kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    KafkaConnectorError,
    KafkaMessage,
    KafkaSink,
    KafkaSource,
)
from aiowax.dataflow import Dataflow
from aiowax.inputs import DynamicSource, StatelessSourcePartition
from aiowax.recovery import init_db_dir
from aiowax.testing import TestingSink, TestingSource, run_main
from aiowax.window import EventClockConfig, TumblingWindow

NOW = datetime(2024, 1, 1, tzinfo=UTC)
T0 = datetime(2024, 1, 1, tzinfo=UTC)
#: Longest wait for a partition to yield what the broker already holds.
READ_TIMEOUT = 10.0


def _drain(part: Any, *, until: int | None = None, timeout: float = READ_TIMEOUT) -> list[Any]:
    """Call a partition's sync ``next_batch`` until StopIteration (or ``until`` items)."""
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    while until is None or len(out) < until:
        try:
            batch = part.next_batch(None)
        except StopIteration:
            return out
        assert isinstance(batch, list)
        out.extend(batch)
        if not batch:
            if time.monotonic() > deadline:
                msg = f"partition stalled after {len(out)} items"
                raise AssertionError(msg)
            time.sleep(0.005)
    return out


def _error_text(exc: BaseException) -> str:
    """An exception's message, notes and causes, as one text."""
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(str(seen))
        parts.extend(getattr(seen, "__notes__", []))
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def _run_collect(source: KafkaSource, mapper: Callable[[Any], Any] | None = None) -> list[Any]:
    out: list[Any] = []
    flow = Dataflow()
    flow.input("in", source)
    if mapper is not None:
        flow.map("map", mapper)
    flow.output("out", TestingSink(out))
    run_main(flow)
    return out


# -- reading ----------------------------------------------------------------------------


def test_offsets_constants_are_librdkafkas() -> None:
    # The reference re-exports confluent_kafka's OFFSET_BEGINNING / OFFSET_END.
    assert OFFSET_BEGINNING == -2
    assert OFFSET_END == -1


def test_several_topics_and_partitions_all_items_in_order(kafka: KafkaHelper) -> None:
    sizes = {kafka.create_topic(3, "a"): 3, kafka.create_topic(2, "b"): 2}
    expected: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
    for topic, partitions in sizes.items():
        for p in range(partitions):
            items = [(b"k%d" % (i % 3), f"{topic}/{p}/{i}".encode()) for i in range(40 + 7 * p)]
            kafka.produce(topic, items, partition=p)
            expected[topic, p] = items

    source = KafkaSource([kafka.bootstrap], list(sizes), tail=False, batch_size=16)
    assert sorted(source.list_parts()) == sorted(
        f"{p}-{topic}" for topic, n in sizes.items() for p in range(n)
    )
    got = _run_collect(source)

    assert len(got) == sum(map(len, expected.values()))
    per_partition: dict[tuple[str, int], list[tuple[bytes, bytes]]] = defaultdict(list)
    for key, value in got:
        assert isinstance(key, bytes) and isinstance(value, bytes)
        topic, p, _ = value.decode().rsplit("/", 2)
        per_partition[topic, int(p)].append((key, value))
    assert per_partition == expected


def test_resume_from_snapshot_continues_exactly_after(kafka: KafkaHelper) -> None:
    topic = kafka.create_topic(2)
    items = [(b"k", b"v%d" % i) for i in range(25)]
    kafka.produce(topic, items, partition=0)
    source = KafkaSource([kafka.bootstrap], [topic], tail=False, batch_size=4)
    name = f"0-{topic}"

    part = source.build_part(NOW, name, None)
    try:
        first = _drain(part, until=9)
        state = part.snapshot()
    finally:
        part.close()
    assert first == items[: len(first)]
    assert isinstance(state, int) and not isinstance(state, bool)
    assert state == len(first)  # the next offset to read

    part = source.build_part(NOW, name, state)
    try:
        rest = _drain(part)
        assert part.snapshot() == len(items)
    finally:
        part.close()
    assert first + rest == items

    # A partition resumed at its end, and an empty partition, end at once.
    for for_part, resume in ((name, len(items)), (f"1-{topic}", None)):
        part = source.build_part(NOW, for_part, resume)
        try:
            assert _drain(part) == []
        finally:
            part.close()


def test_tail_false_ends_where_the_partition_first_ended(kafka: KafkaHelper) -> None:
    # As in the reference, tail=False stops when the end is first reached
    # (Tansu gets ListOffsets(latest) wrong, so the end is the high-water mark
    # a fetch reports): what comes after that is not read.
    topic = kafka.create_topic(1)
    kafka.produce(topic, [(None, b"before%d" % i) for i in range(5)], partition=0)
    source = KafkaSource([kafka.bootstrap], [topic], tail=False)
    part = source.build_part(NOW, f"0-{topic}", None)
    try:
        assert [v for _, v in _drain(part)] == [b"before%d" % i for i in range(5)]
        kafka.produce(topic, [(None, b"after")], partition=0)
        with pytest.raises(StopIteration):
            part.next_batch(None)
        assert part.snapshot() == 5
    finally:
        part.close()


@pytest.mark.parametrize("isolation", ["read_uncommitted", "read_committed"])
def test_tail_false_ends_a_topic_written_in_transactions(
    kafka: KafkaHelper, isolation: str
) -> None:
    # A transaction's commit marker takes the partition's last offset and is
    # never handed over: the source stayed below the end for good and the
    # run never ended (Bytewax 0.17.2 ends: its partition EOF sees past it).
    from confluent_kafka import Producer

    topic = kafka.create_topic(1)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": topic})
    producer.init_transactions(15)
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, b"v%d" % i, b"k", partition=0)
    producer.commit_transaction(15)
    source = KafkaSource(
        [kafka.bootstrap], [topic], tail=False, add_config={"isolation.level": isolation}
    )
    result: list[list[Any]] = []
    runner = threading.Thread(target=lambda: result.append(_run_collect(source)), daemon=True)
    runner.start()
    runner.join(30)
    assert not runner.is_alive(), "tail=False did not end"
    assert result == [[(b"k", b"v%d" % i) for i in range(5)]]


def test_tail_true_keeps_reading_new_messages(kafka: KafkaHelper) -> None:
    topic = kafka.create_topic(1)
    kafka.produce(topic, [(None, b"a")], partition=0)
    source = KafkaSource([kafka.bootstrap], [topic])  # tail=True
    part = source.build_part(NOW, f"0-{topic}", None)
    try:
        assert [v for _, v in _drain(part, until=1)] == [b"a"]
        kafka.produce(topic, [(None, b"b")], partition=0)
        assert [v for _, v in _drain(part, until=1)] == [b"b"]
        assert part.snapshot() == 2
    finally:
        part.close()


# -- source -> map -> sink -----------------------------------------------------------------


def test_flow_source_map_sink_read_back(kafka: KafkaHelper) -> None:
    src_topic = kafka.create_topic(2, "in")
    dst_topic = kafka.create_topic(3, "out")
    items = [(b"key%d" % (i % 5), b"value%d" % i) for i in range(60)]
    kafka.produce(src_topic, items)  # keyed: each key stays on one partition

    flow = Dataflow()
    flow.input("in", KafkaSource([kafka.bootstrap], [src_topic], tail=False))
    flow.map("upper", lambda kv: (kv[0], kv[1].upper()))
    flow.output("out", KafkaSink([kafka.bootstrap], dst_topic))
    run_main(flow)

    records = kafka.consume(dst_topic, len(items), partitions=3)
    assert Counter((r.key, r.value) for r in records) == Counter((k, v.upper()) for k, v in items)
    # The order of each key survives: source partition -> sink partition by key.
    for key in {k for k, _ in items}:
        mine = sorted((r for r in records if r.key == key), key=lambda r: r.offset)
        assert len({r.partition for r in mine}) == 1
        assert [r.value for r in mine] == [v.upper() for k, v in items if k == key]


def test_sink_writes_items_from_a_testing_source(kafka: KafkaHelper) -> None:
    topic = kafka.create_topic(1)
    items = [(b"a", b"1"), (None, b"2"), (b"c", b"3")]
    flow = Dataflow()
    flow.input("in", TestingSource(items))
    flow.output("out", KafkaSink([kafka.bootstrap], topic))
    run_main(flow)
    assert [(r.key, r.value) for r in kafka.consume(topic, 3, partitions=1)] == items


def test_sink_keeps_the_order_of_mixed_items_with_their_headers_and_timestamps(
    kafka: KafkaHelper,
) -> None:
    topic = kafka.create_topic(1)
    stamp = T0 + timedelta(milliseconds=5)
    items = [
        (b"a", b"1"),
        KafkaMessage(b"m", b"2", timestamp=stamp, headers=[("h", b"x")]),
        ("str-key", "str-value-\u00e9"),
        (bytearray(b"ba"), memoryview(b"3")),
        (None, None),
    ]
    flow = Dataflow()
    flow.input("in", TestingSource(items, batch_size=5))
    flow.output("out", KafkaSink([kafka.bootstrap], topic))
    run_main(flow)
    got = kafka.consume(topic, 5, partitions=1)
    assert [(r.key, r.value) for r in got] == [
        (b"a", b"1"),
        (b"m", b"2"),
        (b"str-key", "str-value-\u00e9".encode()),
        (b"ba", b"3"),
        (None, None),
    ]
    assert got[1].timestamp_ms == _ms(stamp)
    assert got[1].headers == [("h", b"x")]


def test_a_bad_sink_item_names_topic_and_step_and_what_came_before_is_written(
    kafka: KafkaHelper, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = kafka.create_topic(1)
    batches: list[list[Any]] = []
    go = threading.Event()
    write = _KafkaSinkPartition._aiowax_awrite_batch

    async def recording_write(self: _KafkaSinkPartition, got: list[Any]) -> None:
        batches.append(list(got))
        await write(self, got)
        go.set()  # the source sends its second batch only now

    monkeypatch.setattr(_KafkaSinkPartition, "_aiowax_awrite_batch", recording_write)
    flow = Dataflow()
    flow.input("in", _PausedSource([(b"k", b"0"), (b"k", b"1")], [(b"k", b"2"), (b"k", 42)], go))
    flow.output("out", KafkaSink([kafka.bootstrap], topic))
    with pytest.raises(TypeError) as info:
        run_main(flow)
    text = _error_text(info.value)
    assert topic in text and "42" in text, text
    assert "step 'out'" in text, text
    assert batches == [[(b"k", b"0"), (b"k", b"1")], [(b"k", b"2"), (b"k", 42)]]
    # The bad batch is refused before any of it is sent; the batch before it
    # stays written, though it was still in flight when the run failed (the
    # step confirms it as it closes).
    written = [r.value for r in kafka.consume(topic, 2, partitions=1, timeout=2)]
    assert written == [b"0", b"1"]


@pytest.mark.parametrize(
    "item", [["k", "v"], ("k",), mock.NonCallableMock(spec=tuple)], ids=["list", "1-tuple", "mock"]
)
def test_a_sink_item_that_is_no_pair_is_refused_naming_the_topic(item: Any) -> None:
    # A mock or proxy whose ``__class__`` says tuple is refused like a list,
    # not with a raw error from ``len()``.
    with pytest.raises(TypeError, match="KafkaSink to topic 't': items must be"):
        to_record("t", item)


def test_sink_write_batch_by_hand_returns_once_the_broker_has_the_items(
    kafka: KafkaHelper,
) -> None:
    topic = kafka.create_topic(1)
    part = KafkaSink([kafka.bootstrap], topic, add_config={"linger.ms": 500}).build(0, 1)
    try:
        part.write_batch([(b"a", b"1"), (b"b", b"2")])
        # No close, no wait: a long linger would still hold them without the flush.
        got = kafka.consume(topic, 2, partitions=1, timeout=0.3)
        assert [(r.key, r.value) for r in got] == [(b"a", b"1"), (b"b", b"2")]
    finally:
        part.close()


# -- messages=True -----------------------------------------------------------------------


def _ms(dt: datetime) -> int:
    return int((dt - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(milliseconds=1))


def test_messages_carry_metadata(kafka: KafkaHelper) -> None:
    topic = kafka.create_topic(2)
    stamp = T0 + timedelta(seconds=1, milliseconds=234)
    for p in range(2):
        kafka.produce(
            topic,
            [(b"k%d" % p, b"v%d-%d" % (p, i)) for i in range(3)],
            partition=p,
            timestamp_ms=_ms(stamp),
            headers=[("trace", b"t%d" % p), ("empty", b"")],
        )
    got = _run_collect(KafkaSource([kafka.bootstrap], [topic], tail=False, messages=True))

    assert len(got) == 6
    for msg in got:
        assert isinstance(msg, KafkaMessage)
        assert msg.topic == topic
        assert msg.partition in (0, 1)
        assert msg.key == b"k%d" % msg.partition
        assert msg.value == b"v%d-%d" % (msg.partition, msg.offset)
        assert msg.timestamp == stamp
        assert msg.timestamp is not None and msg.timestamp.utcoffset() == timedelta(0)
        assert [tuple(h) for h in msg.headers] == [
            ("trace", b"t%d" % msg.partition),
            ("empty", b""),
        ]
    assert sorted((m.partition, m.offset) for m in got) == [
        (p, o) for p in (0, 1) for o in (0, 1, 2)
    ]


def test_tumbling_event_time_window_on_kafka_timestamps(kafka: KafkaHelper) -> None:
    topic = kafka.create_topic(2)
    # Key "a" on partition 0, "b" on partition 1; one message per second.
    counts: Counter[tuple[str, datetime]] = Counter()
    for p, key in enumerate("ab"):
        for i in range(12 + 3 * p):
            ts = T0 + timedelta(seconds=i, milliseconds=100)
            kafka.produce(topic, [(key.encode(), b"%d" % i)], partition=p, timestamp_ms=_ms(ts))
            counts[key, T0 + timedelta(seconds=5 * (i // 5))] += 1

    out: list[Any] = []
    flow = Dataflow()
    flow.input("in", KafkaSource([kafka.bootstrap], [topic], tail=False, messages=True))
    flow.map("key", lambda m: (m.key.decode(), m))
    flow.fold_window(
        "count",
        # A generous lateness: windows close when the input ends, whatever the
        # interleaving of the two partitions.
        EventClockConfig(lambda m: m.timestamp, wait_for_system_duration=timedelta(hours=1)),
        TumblingWindow(timedelta(seconds=5), align_to=T0),
        lambda: 0,
        lambda n, m: n + 1,
    )
    flow.output("out", TestingSink(out))
    run_main(flow)

    got = {(key, meta.open_time): n for key, (meta, n) in out}
    assert got == dict(counts)


# -- errors -------------------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_unknown_topic_is_named(kafka: KafkaHelper) -> None:
    existing = kafka.create_topic(1)
    missing = kafka.topic_name("missing")
    with pytest.raises(Exception) as info:
        source = KafkaSource([kafka.bootstrap], [existing, missing], tail=False)
        _run_collect(source)
    assert missing in _error_text(info.value)
    # Reading its metadata must not have auto-created it (Tansu would).
    from confluent_kafka import Consumer

    consumer = Consumer(
        {"bootstrap.servers": kafka.bootstrap, "group.id": "x", "allow.auto.create.topics": False}
    )
    try:
        topics = consumer.list_topics(missing, timeout=5).topics
        assert topics[missing].error is not None or not topics[missing].partitions
    finally:
        consumer.close()


@pytest.mark.timeout(30)
def test_unreachable_brokers_are_named_within_the_timeout() -> None:
    broker = f"127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        source = KafkaSource([broker], ["t"], tail=False, timeout=timedelta(seconds=2))
        _run_collect(source)
    elapsed = time.monotonic() - t0
    assert broker in _error_text(info.value)
    assert elapsed < 10, elapsed


@pytest.mark.timeout(30)
@pytest.mark.parametrize("side", ["source", "sink", "cluster"])
def test_librdkafkas_own_log_lines_go_to_a_python_logger_not_to_stderr(
    side: str,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = f"127.0.0.1:{free_port()}"  # nothing listens there
    caplog.set_level(logging.INFO, logger="aiowax.kafka.librdkafka")
    flow = Dataflow()
    if side == "sink":
        flow.input("in", TestingSource([(b"k", b"v")]))
        sink = KafkaSink([broker], "t", add_config={"message.timeout.ms": 2000})
        flow.output("out", sink)
    else:
        tail = side == "cluster"  # cluster mode reads for good
        flow.input("in", KafkaSource([broker], ["t"], tail=tail, timeout=timedelta(seconds=2)))
        flow.output("out", TestingSink([]))
    if side == "cluster":
        # Cluster mode's admin client, asking for the topics before the run.
        monkeypatch.setattr(topics, "_ADMIN_TIMEOUT_S", 2.0)
        with pytest.raises(ClusterError, match="did not answer"):
            topics.prepare_topics(flow, KafkaCluster(brokers=[broker], app_id="app"))
    else:
        with pytest.raises(KafkaConnectorError):
            run_main(flow)
    said = [r.getMessage() for r in caplog.records if r.name == "aiowax.kafka.librdkafka"]
    assert any(f"Connect to ipv4#{broker} failed" in line for line in said), said
    # librdkafka's own stderr lines read "%3|<time>|FAIL|rdkafka#...".
    assert "|FAIL|" not in capfd.readouterr().err


def test_librdkafka_lines_alike_go_through_once_a_window_then_say_how_many_were_held() -> None:
    # helper-63: while the brokers were down, a cluster copy's clients
    # logged about 1,100 "Connection refused" lines in 10 s, at ERROR.
    now = [0.0]
    repeats = RepeatFilter(window_s=30.0, clock=lambda: now[0])
    refused = "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused"

    def line(text: str, client: str = "rdkafka#producer-1") -> logging.LogRecord:
        args = ("FAIL", client, text)
        return logging.LogRecord(
            LIBRDKAFKA_LOGGER.name, logging.ERROR, "", 0, "%s [%s] %s", args, None
        )

    assert repeats.filter(line(f"{refused} (after 0ms in state CONNECT)"))
    now[0] = 5.0
    # Alike but for its numbers: held back, as often as it comes.
    assert not repeats.filter(line(f"{refused} (after 12ms in state CONNECT)"))
    assert not repeats.filter(line(f"{refused} (after 1ms in state CONNECT)"))
    # Another client's, another broker's, another kind of line: let through.
    assert repeats.filter(line(f"{refused} (after 0ms in state CONNECT)", "rdkafka#consumer-2"))
    assert repeats.filter(line(f"{refused.replace(':1', ':2')} (after 0ms in state CONNECT)"))
    assert repeats.filter(line("127.0.0.1:1/bootstrap: Disconnected"))
    now[0] = 31.0
    after = line(f"{refused} (after 3ms in state CONNECT)")
    assert repeats.filter(after)
    assert after.getMessage() == (
        f"FAIL [rdkafka#producer-1] {refused} (after 3ms in state CONNECT) "
        "(and 2 more like it in the 31 s before, not shown)"
    )
    # Other records of the logger pass as they are.
    assert repeats.filter(logging.LogRecord("x", logging.INFO, "", 0, "plain", None, None))
    assert any(isinstance(f, RepeatFilter) for f in LIBRDKAFKA_LOGGER.filters)
    # Kinds without end (a line per topic, say) keep the memory bounded:
    # past LIMIT the oldest half is forgotten, and they go through again.
    for topic in range(RepeatFilter.LIMIT + 10):
        assert repeats.filter(line(f"Topic t{topic} not found"))
    assert len(repeats._seen) <= RepeatFilter.LIMIT
    assert repeats.filter(line("Topic t0 not found"))  # forgotten: let through
    assert not repeats.filter(line(f"Topic t{RepeatFilter.LIMIT + 9} not found"))


@pytest.mark.parametrize("cls", ["source", "sink"])
def test_a_str_for_brokers_is_refused(cls: str) -> None:
    with pytest.raises(TypeError, match="brokers must be an iterable and not a string"):
        if cls == "source":
            KafkaSource("a:1", ["t"])  # type: ignore[arg-type]
        else:
            KafkaSink("a:1", "t")  # type: ignore[arg-type]


def test_a_str_for_topics_is_refused() -> None:
    with pytest.raises(TypeError, match="topics must be an iterable and not a string"):
        KafkaSource(["a:1"], "t")  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", ["source", "sink"])
def test_an_unknown_add_config_key_is_named(kafka: KafkaHelper, cls: str) -> None:
    topic = kafka.create_topic(1)
    bad = {"no.such.property": "1"}
    with pytest.raises(Exception) as info:
        if cls == "source":
            _run_collect(KafkaSource([kafka.bootstrap], [topic], tail=False, add_config=bad))
        else:
            flow = Dataflow()
            flow.input("in", TestingSource([(b"k", b"v")]))
            flow.output("out", KafkaSink([kafka.bootstrap], topic, add_config=bad))
            run_main(flow)
    assert "no.such.property" in _error_text(info.value)


def test_group_id_in_a_source_add_config_is_refused_with_the_reason(kafka: KafkaHelper) -> None:
    with pytest.raises(Exception) as info:
        source = KafkaSource(["a:1"], ["t"], add_config={"group.id": "mine"})
        _run_collect(source)
    text = _error_text(info.value)
    assert "group.id" in text
    # Why: the offsets live in aiowax's snapshots, not in a consumer group.
    assert any(word in text for word in ("snapshot", "recovery", "resume", "commit")), text
    # And what shares partitions through a group: cluster mode (it is not "unsupported").
    assert "not supported" not in text
    assert "KafkaCluster" in text and "--kafka-cluster" in text and "scale-out" in text, text


# -- a crash with recovery -----------------------------------------------------------------

CRASH_KEYS = 8
CRASH_ITEMS = 2000


def _start_crash_flow(bootstrap: str, topic: str, out: Path, db: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOWAX_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    flow_file = Path(kafka_crash_flow.__file__).resolve()
    target = f"{flow_file}:make_flow({bootstrap!r}, {topic!r}, {str(out)!r})"
    return subprocess.Popen(
        [sys.executable, "-m", "aiowax", target, "-r", str(db), "-s", "0.05"],
        cwd=out.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.timeout(60)
def test_sigkill_mid_run_then_resume_reads_every_offset(kafka: KafkaHelper, tmp_path: Path) -> None:
    topic = kafka.create_topic(2)
    items = [(b"k%d" % (i % CRASH_KEYS), b"%d" % i) for i in range(CRASH_ITEMS)]
    kafka.produce(topic, items)
    # What a crash-free run ends with, from the topic itself.
    records = kafka.consume(topic, CRASH_ITEMS, partitions=2)
    assert len(records) == CRASH_ITEMS
    offsets = {(r.partition, r.offset) for r in records}
    final_counts = Counter(r.key.decode() for r in records if r.key is not None)

    db = tmp_path / "db"
    init_db_dir(db, 2)
    out = tmp_path / "out.txt"
    rng = random.Random(12)
    killed = 0
    for _ in range(6):
        proc = _start_crash_flow(kafka.bootstrap, topic, out, db)
        try:
            size = out.stat().st_size if out.exists() else 0
            deadline = time.monotonic() + 30
            while proc.poll() is None and time.monotonic() < deadline:
                if out.exists() and out.stat().st_size > size:
                    break
                time.sleep(0.005)
            if killed < 2:
                time.sleep(rng.uniform(0, 0.2))
                proc.send_signal(signal.SIGKILL)
            _, stderr = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode == -signal.SIGKILL:
            killed += 1
            continue
        assert proc.returncode == 0, stderr.decode(errors="replace")[-3000:]
        break
    else:
        pytest.fail("the flow never finished")
    assert killed >= 1  # at least the first run was killed mid-run

    seen: set[tuple[int, int]] = set()
    last: dict[str, int] = {}
    per_key: dict[str, list[int]] = defaultdict(list)
    for line in out.read_text().splitlines():
        partition, offset, key, count = line.split()
        seen.add((int(partition), int(offset)))
        per_key[key].append(int(count))
        last[key] = max(last.get(key, 0), int(count))
    assert seen == offsets  # every offset read at least once
    assert last == dict(final_counts)  # state exactly once
    for key, counts in per_key.items():
        assert sorted(set(counts)) == list(range(1, final_counts[key] + 1)), key


# -- brokers lost mid-run ---------------------------------------------------------------

#: Longest wait for what a flow reads or writes before its broker is killed.
ARRIVAL_TIMEOUT = 15.0
#: Longest a flow may take to fail once its broker is gone (with 2 s timeouts).
FAIL_WITHIN = 8.0


async def _wait_for(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` with short sleeps, up to `ARRIVAL_TIMEOUT`."""
    with anyio.fail_after(ARRIVAL_TIMEOUT):
        while not predicate():
            await anyio.sleep(0.02)
    assert predicate(), what


def _run_then_kill(flow: Dataflow, broker: Any, ready: Callable[[], bool]) -> tuple[Any, float]:
    """Run ``flow``; once ``ready()``, SIGKILL ``broker``.

    Returns what the run raised (None if it ended without error) and how long
    after the kill it ended. A watchdog bounds the whole run.
    """
    outcome: dict[str, Any] = {}

    async def main() -> None:
        async def run_flow() -> None:
            try:
                await aiowax.run(flow, epoch_interval=timedelta(milliseconds=200))
            except Exception as exc:
                outcome["exc"] = exc
            outcome["ended"] = time.monotonic()
            done.set()

        done = anyio.Event()
        with anyio.fail_after(ARRIVAL_TIMEOUT + FAIL_WITHIN + 10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run_flow)
                await _wait_for(lambda: ready() or done.is_set(), "the flow's first items")
                assert not done.is_set(), f"the flow ended before the kill: {outcome}"
                broker.proc.send_signal(signal.SIGKILL)
                broker.proc.wait(5)
                outcome["killed"] = time.monotonic()
                await done.wait()

    anyio.run(main)
    return outcome.get("exc"), outcome["ended"] - outcome["killed"]


@pytest.mark.timeout(60)
def test_source_fails_clearly_once_its_broker_is_lost_mid_run(dedicated_broker: Any) -> None:
    broker = dedicated_broker
    kafka = KafkaHelper(broker.bootstrap, "lost-source")
    topic = kafka.create_topic(1)
    sent = [(b"k", b"v%d" % i) for i in range(5)]
    kafka.produce(topic, sent)
    out: list[Any] = []
    flow = Dataflow()
    flow.input("in", KafkaSource([broker.bootstrap], [topic], timeout=timedelta(seconds=2)))
    flow.output("out", TestingSink(out))

    exc, elapsed = _run_then_kill(flow, broker, lambda: len(out) >= len(sent))

    assert isinstance(exc, KafkaConnectorError), repr(exc)
    text = _error_text(exc)
    assert broker.bootstrap in text, text
    assert "unreachable" in text, text
    assert topic in text, text
    assert elapsed < FAIL_WITHIN, (elapsed, text)
    assert out == sent


class _PausedSource(DynamicSource[Any]):
    """``first`` items at once, then ``then`` items once ``go`` is set, then nothing."""

    def __init__(self, first: list[Any], then: list[Any], go: threading.Event) -> None:
        self._batches = [first, then]
        self._go = go

    def build(self, now: datetime, worker_index: int, worker_count: int) -> Any:
        batches, go = list(self._batches), self._go

        class Part(StatelessSourcePartition[Any]):
            async def next_batch(self, sched: datetime | None) -> list[Any]:
                if len(batches) == 2:
                    return batches.pop(0)
                if batches and go.is_set():
                    return batches.pop(0)
                await anyio.sleep(0.05)
                return []

        return Part()


@pytest.mark.timeout(60)
def test_sink_fails_naming_the_topic_once_its_broker_is_lost_mid_run(
    dedicated_broker: Any,
) -> None:
    broker = dedicated_broker
    kafka = KafkaHelper(broker.bootstrap, "lost-sink")
    topic = kafka.create_topic(1)
    first = [(b"k", b"before%d" % i) for i in range(3)]
    go = threading.Event()
    flow = Dataflow()
    flow.input("in", _PausedSource(first, [(b"k", b"after")], go))
    sink = KafkaSink([broker.bootstrap], topic, add_config={"message.timeout.ms": 2000})
    flow.output("out", sink)
    seen: list[Any] = []

    def first_items_written() -> bool:
        if not seen:
            seen.extend(kafka.consume(topic, len(first), partitions=1, timeout=0.5))
            if len(seen) < len(first):
                seen.clear()
        if seen:
            go.set()  # the next item is written once the broker is gone
        return bool(seen)

    # The readiness check blocks the loop up to 0.8 s a call: bounded, harmless here.
    exc, elapsed = _run_then_kill(flow, broker, first_items_written)

    assert [(r.key, r.value) for r in seen] == first
    assert isinstance(exc, KafkaConnectorError), repr(exc)
    text = _error_text(exc)
    assert topic in text, text
    assert "step 'out'" in text, text
    assert broker.bootstrap in text, text
    assert elapsed < FAIL_WITHIN, (elapsed, text)


def test_the_kafka_example_runs_against_the_test_broker(kafka_bootstrap: str) -> None:
    example = Path(__file__).parents[2] / "examples" / "kafka_flow.py"
    # The docs' variable (helper-58: the example read another one).
    env = {**os.environ, "KAFKA_BROKERS": kafka_bootstrap}
    done = subprocess.run(
        [sys.executable, str(example)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    values = sorted(line.split(" ", 2)[2] for line in done.stdout.splitlines())
    words = ["kafka", "aiowax", "stream", "topic", "offset"]
    assert values == sorted(repr(w.upper().encode()) for w in words), done.stdout


@pytest.mark.parametrize(
    ("timeout_s", "add_config", "expected"),
    [
        (10.0, {}, 5_000),
        (1.0, {}, 1_500),
        (600.0, {}, 60_000),
        (10.0, {"socket.timeout.ms": 900}, 900),
    ],
)
def test_a_sources_requests_time_out_within_its_timeout(
    timeout_s: float, add_config: dict[str, Any], expected: int
) -> None:
    # A network that drops packets silently (no reset, no refusal) gives
    # librdkafka no error until a request times out, after 60 s by default:
    # the source's timeout (10 s) never started, and a 70 s outage went by
    # without a word. Measured with a blackholing proxy in front of Tansu
    # (timeout 10 s): no error in 70 s before, KafkaConnectorError 21.6 s
    # into the outage after.
    from aiowax._connectors.kafka.client import consumer_config

    config = consumer_config(["b:9092"], add_config, lambda _e: None, timeout_s)
    assert config["socket.timeout.ms"] == expected


def test_the_socket_timeout_stays_a_second_above_a_users_fetch_wait() -> None:
    # librdkafka wants socket.timeout.ms above fetch.wait.max.ms by 1 s, or
    # an idle partition's fetches (held by the broker that long) time out.
    from aiowax._connectors.kafka.client import consumer_config

    config = consumer_config(["b:9092"], {"fetch.wait.max.ms": 4000}, lambda _e: None, 10.0)
    assert config["socket.timeout.ms"] == 5_000
    config = consumer_config(["b:9092"], {"fetch.wait.max.ms": 4500}, lambda _e: None, 10.0)
    assert config["socket.timeout.ms"] == 5_500
