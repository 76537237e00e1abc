"""Flows that the cluster tests run with ``python -m aiowax ... --kafka-cluster``.

Each factory takes the brokers (comma-separated) and the source and
output topics. Every
output value names the process that wrote it, so a test can see which copy
computed what, and when a key moved.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

from aiowax.connectors.kafka import KafkaMessage, KafkaSink, KafkaSource
from aiowax.dataflow import Dataflow
from aiowax.window import EventClockConfig, TumblingWindow

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _count(seen: int, _value: Any) -> tuple[int, int]:
    return seen + 1, seen + 1


def counts(brokers: str, src: str, dst: str) -> Dataflow:
    """A running count per key: ``b"key"`` -> ``b"count pid"``."""
    pid = os.getpid()
    flow = Dataflow()
    flow.input("in", KafkaSource(brokers.split(","), [src]))
    flow.map("decode", lambda kv: (kv[0].decode(), kv[1]))
    flow.stateful_map("count", lambda: 0, _count)
    flow.map("encode", lambda kv: (kv[0].encode(), b"%d %d" % (kv[1], pid)))
    flow.output("out", KafkaSink(brokers.split(","), dst))
    return flow


def _event(msg: KafkaMessage) -> tuple[str, datetime]:
    assert msg.key is not None and msg.value is not None
    return msg.key.decode(), T0 + timedelta(seconds=int(msg.value))


def window_counts(brokers: str, src: str, dst: str) -> Dataflow:
    """Items per key per 10 s tumbling event-time window (the time is in the value)."""
    flow = Dataflow()
    flow.input("in", KafkaSource(brokers.split(","), [src], messages=True))
    flow.map("decode", _event)
    clock = EventClockConfig(lambda t: t, wait_for_system_duration=timedelta(0))
    windows = TumblingWindow(length=timedelta(seconds=10), align_to=T0)
    flow.fold_window("per_window", clock, windows, lambda: 0, lambda n, _t: n + 1)
    flow.map("encode", _encode_window)
    flow.output("out", KafkaSink(brokers.split(","), dst))
    return flow


def _encode_window(kv: tuple[str, Any]) -> tuple[bytes, bytes]:
    """``(key, (metadata, count))`` -> ``b"key"``, ``b"start count pid"``."""
    key, (meta, count) = kv
    start = int((meta.open_time - T0).total_seconds())
    return key.encode(), b"%d %d %d" % (start, count, os.getpid())
