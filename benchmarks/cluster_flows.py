"""The flows `bench_cluster.py` runs with ``python -m aiowax ... --kafka-cluster``.

Each factory takes the brokers, the source topic and a directory where every
copy appends its progress (one file per sink partition, ``NAME VALUE`` lines,
the largest value per name of each batch), so the benchmark sees when the
last item is through without a sink that costs the broker anything.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from aiowax.connectors.kafka import KafkaMessage, KafkaSource
from aiowax.dataflow import Dataflow
from aiowax.outputs import DynamicSink, StatelessSinkPartition

#: Rounds of `cpu_heavy`: about 50 us of Python on this machine (as bench_process_pool).
ROUNDS = 625


def cpu_heavy(x: int) -> int:
    """About 50 us of pure Python: a linear congruential generator run ROUNDS times."""
    acc = x
    for _ in range(ROUNDS):
        acc = (acc * 1103515245 + 12345) & 0x7FFFFFFF
    return acc


class _ProgressPart(StatelessSinkPartition[tuple[Any, int]]):
    def __init__(self, path: Path) -> None:
        self._file = path.open("a")

    def write_batch(self, items: list[tuple[Any, int]]) -> None:
        best: dict[Any, int] = {}
        for name, value in items:
            if value > best.get(name, -1):
                best[name] = value
        self._file.write("".join(f"{name} {value}\n" for name, value in best.items()))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class ProgressSink(DynamicSink[tuple[Any, int]]):
    """Appends ``name value`` lines to a file of its own in ``directory``."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def build(self, worker_index: int, worker_count: int) -> _ProgressPart:
        return _ProgressPart(self.directory / f"{os.getpid()}-{uuid.uuid4().hex}.log")


def _work(msg: KafkaMessage) -> tuple[int, int]:
    assert msg.value is not None
    cpu_heavy(int(msg.value))
    return msg.partition, msg.offset


def stateless(brokers: str, src: str, progress: str) -> Dataflow:
    """KafkaSource -> map (about 50 us of Python) -> progress: ``partition offset``."""
    flow = Dataflow()
    flow.input("in", KafkaSource(brokers.split(","), [src], messages=True))
    flow.map("work", _work)
    flow.output("progress", ProgressSink(progress))
    return flow


def _count(seen: int, _value: Any) -> tuple[int, int]:
    return seen + 1, seen + 1


def _key(kv: tuple[bytes, bytes]) -> tuple[str, bytes]:
    return kv[0].decode(), kv[1]


def keyed(brokers: str, src: str, progress: str) -> Dataflow:
    """KafkaSource -> key -> stateful_map (count per key, through the repartition
    topic) -> progress: ``key count``."""
    flow = Dataflow()
    flow.input("in", KafkaSource(brokers.split(","), [src]))
    flow.map("key", _key)
    flow.stateful_map("count", lambda: 0, _count)
    flow.output("progress", ProgressSink(progress))
    return flow
