"""A flow for the crash tests of recovery, run as a script that gets SIGKILLed.

``python recovery_crash_flow.py DB_DIR OUT_FILE WORKERS`` runs a running sum
per key over `ITEMS` items (`KEYS` keys), resuming from the recovery
directory ``DB_DIR``. Every result goes to ``OUT_FILE`` as a line
``index key total ;`` through a `DynamicSink` that appends, flushes and
fsyncs each batch; the ``;`` marks a complete line, since a kill can cut the
last write short. The source is slow (it sleeps a millisecond per batch of
ten), so the run lasts long enough to be killed in the middle.

The test module imports it too, for the constants and the expected results.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

import anyio

from aiowax.dataflow import Dataflow
from aiowax.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.recovery import RecoveryConfig
from aiowax.testing import cluster_main

ITEMS = 20_000
KEYS = 20
BATCH = 10
EPOCH_INTERVAL = timedelta(milliseconds=50)


def key_of(index: int) -> str:
    return f"k{index % KEYS}"


def value_of(index: int) -> int:
    return index % 97 + 1


def expected_lines() -> dict[int, tuple[str, int]]:
    """What a crash-free run emits: item index -> (key, running total)."""
    totals: dict[str, int] = {}
    out = {}
    for index in range(ITEMS):
        key = key_of(index)
        totals[key] = totals.get(key, 0) + value_of(index)
        out[index] = (key, totals[key])
    return out


def final_totals() -> dict[str, int]:
    """The per-key state at the end of a crash-free run."""
    totals: dict[str, int] = {}
    for index in range(ITEMS):
        totals[key_of(index)] = totals.get(key_of(index), 0) + value_of(index)
    return totals


def parse(path: Path) -> list[tuple[int, str, int]]:
    """The complete lines of an output file: (index, key, total)."""
    out = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[3] == ";":
            out.append((int(fields[0]), fields[1], int(fields[2])))
    return out


class _SlowPartition(StatefulSourcePartition[tuple[str, tuple[int, int]], int]):
    def __init__(self, resume_state: int | None) -> None:
        self.pos = resume_state or 0

    async def next_batch(self, sched: datetime | None) -> list[tuple[str, tuple[int, int]]]:
        if self.pos >= ITEMS:
            raise StopAsyncIteration
        await anyio.sleep(0.001)
        end = min(self.pos + BATCH, ITEMS)
        batch = [(key_of(i), (i, value_of(i))) for i in range(self.pos, end)]
        self.pos = end
        return batch

    def snapshot(self) -> int:
        return self.pos


class SlowSource(FixedPartitionedSource[tuple[str, tuple[int, int]], int]):
    def list_parts(self) -> list[str]:
        return ["numbers"]

    def build_part(self, now: datetime, for_part: str, resume_state: int | None) -> _SlowPartition:
        return _SlowPartition(resume_state)


class _FilePartition(StatelessSinkPartition[tuple[str, tuple[int, int]]]):
    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        # A kill may have cut the last line short: start on a fresh line.
        if path.stat().st_size and not path.read_bytes().endswith(b"\n"):
            os.write(self.fd, b"\n")

    def write_batch(self, items: list[tuple[str, tuple[int, int]]]) -> None:
        text = "".join(f"{index} {key} {total} ;\n" for key, (index, total) in items)
        data = text.encode()
        while data:
            data = data[os.write(self.fd, data) :]
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class FileSink(DynamicSink[tuple[str, tuple[int, int]]]):
    def __init__(self, path: Path) -> None:
        self.path = path

    def build(self, worker_index: int, worker_count: int) -> _FilePartition:
        return _FilePartition(self.path)


def _add(total: int, item: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    index, value = item
    total += value
    return total, (index, total)


def make_flow(out: Path) -> Dataflow:
    flow = Dataflow()
    flow.input("inp", SlowSource())
    flow.stateful_map("sum", lambda: 0, _add)
    flow.output("out", FileSink(out))
    return flow


def main(argv: list[str]) -> None:
    db_dir, out, workers = Path(argv[0]), Path(argv[1]), int(argv[2])
    cluster_main(
        make_flow(out),
        [],
        0,
        worker_count_per_proc=workers,
        epoch_interval=EPOCH_INTERVAL,
        recovery_config=RecoveryConfig(db_dir),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
