"""A flow for the crash tests of recovery, run as a script that gets SIGKILLed.

``python recovery_crash_flow.py DB_DIR OUT_FILE WORKERS`` runs a running sum
per key over `ITEMS` items (`KEYS` keys), resuming from the recovery
directory ``DB_DIR``. Every result goes to ``OUT_FILE`` as a line
``index key total ;`` through a `DynamicSink` that appends, flushes and
fsyncs each batch; the ``;`` marks a complete line, since a kill can cut the
last write short. The source is slow (it sleeps a millisecond per batch of
ten), so the run lasts long enough to be killed in the middle.

The test module imports it too, for the constants and the expected results.

`stop_flow` is the flow of ``tests/recovery/test_crash_and_stop.py``, which
runs it with ``python -m aiowax`` and kills it or stops it with SIGTERM.
"""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

from aiowax.connectors.files import FileSink as ResumableFileSink
from aiowax.connectors.files import FileSource
from aiowax.dataflow import Dataflow
from aiowax.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.recovery import RecoveryConfig
from aiowax.testing import cluster_main
from aiowax.window import EventClockConfig, TumblingWindow

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


# -- the flow of tests/recovery/test_crash_and_stop.py ---------------------------------
#
# Run by the command line (``python -m aiowax THIS_FILE:stop_flow(IN, OUT_DIR)
# -r DIR -w N -s 0.05``), killed with SIGKILL and stopped with SIGTERM. Three
# pipelines read the same generated file (`write_input`) through a paced
# `FileSource`; each writes one file of ``OUT_DIR`` through a `FileSink` of
# `aiowax.connectors.files` (imported as `ResumableFileSink`):
#
# - ``sums.txt``: a running total per key (`stateful_map`), one line per item;
# - ``windows.txt``: per key and tumbling event-time window of `STOP_WINDOW`,
#   the count and sum of its values (`fold_window` on an `EventClockConfig`
#   with `STOP_WAIT` of lateness);
# - ``batches.txt``: per key, the item indexes in lists of `STOP_BATCH`
#   (`batch`, whose timeout never fires: lists end by size or at the end).
#
# Items come in event-time order, `STOP_STEP` apart, so a key meets its next
# item `STOP_KEYS` * `STOP_STEP` (0.8 s) later in event time: none is late
# unless the key's watermark moves on by more than `STOP_WAIT` plus that
# (1.3 s) while the key waits for it. A crash-free run therefore drops
# nothing (only an event loop stalled that long could make it), and
# `stop_expected` is what it writes.

STOP_ITEMS = 6_000
STOP_KEYS = 4
#: Event time between consecutive items: 0.8 s between items of one key.
STOP_STEP = timedelta(milliseconds=200)
STOP_T0 = datetime(2024, 1, 1, tzinfo=UTC)
#: Two items of each key per window: short, so that a watermark moved on by
#: seconds closes a window with items still to come (see the test module).
STOP_WINDOW = timedelta(seconds=1.6)
STOP_WAIT = timedelta(seconds=0.5)
STOP_BATCH = 7
#: Lines per read, and the pause before each: a run takes a couple of
#: seconds, long enough to be interrupted at random moments.
STOP_READ_LINES = 20
STOP_READ_PAUSE = 0.008
#: The output files of `stop_flow`, in its ``out_dir``.
STOP_OUTPUTS = ("sums.txt", "windows.txt", "batches.txt")


def write_input(path: Path) -> None:
    """Write the input of `stop_flow`: ``index key value`` per line."""
    lines = (f"{i} {key_of_stop(i)} {value_of(i)}\n" for i in range(STOP_ITEMS))
    path.write_text("".join(lines))


def key_of_stop(index: int) -> str:
    return f"k{index % STOP_KEYS}"


def _stop_time(index: int) -> datetime:
    return STOP_T0 + index * STOP_STEP


def _window_start(index: int) -> datetime:
    offset = (_stop_time(index) - STOP_T0) // STOP_WINDOW
    return STOP_T0 + offset * STOP_WINDOW


def stop_expected() -> dict[str, list[str]]:
    """The lines of each output file of a crash-free run (in no particular order)."""
    totals: dict[str, int] = {}
    sums = []
    windows: dict[tuple[str, datetime], tuple[int, int]] = {}
    batches: dict[str, list[int]] = {}
    batch_lines = []
    for i in range(STOP_ITEMS):
        key, value = key_of_stop(i), value_of(i)
        totals[key] = totals.get(key, 0) + value
        sums.append(f"sum {i} {key} {totals[key]}")
        count, total = windows.get((key, _window_start(i)), (0, 0))
        windows[key, _window_start(i)] = (count + 1, total + value)
        pending = batches.setdefault(key, [])
        pending.append(i)
        if len(pending) == STOP_BATCH:
            batch_lines.append(_batch_line(key, pending))
            pending.clear()
    batch_lines.extend(_batch_line(key, rest) for key, rest in batches.items() if rest)
    window_lines = [
        _window_line(key, start, count, total) for (key, start), (count, total) in windows.items()
    ]
    return dict(zip(STOP_OUTPUTS, (sums, window_lines, batch_lines), strict=True))


def _window_line(key: str, start: datetime, count: int, total: int) -> str:
    return f"window {key} {start.isoformat()} {count} {total}"


def _batch_line(key: str, indexes: list[int]) -> str:
    return f"batch {key} {','.join(map(str, indexes))}"


class _PacedPartition(StatefulSourcePartition[str, Any]):
    """A partition of another source that pauses before each read."""

    def __init__(self, inner: StatefulSourcePartition[str, Any]) -> None:
        self._inner = inner

    async def next_batch(self, sched: datetime | None) -> list[str]:
        await anyio.sleep(STOP_READ_PAUSE)
        # The file partitions read synchronously (as in the reference) and
        # offer the engine an async path that reads in a worker thread.
        aread = getattr(self._inner, "_aiowax_anext_batch", None)
        if aread is not None:
            batch: list[str] = await aread(sched)
            return batch
        return await anyio.to_thread.run_sync(self._inner.next_batch, sched)

    def snapshot(self) -> Any:
        return self._inner.snapshot()

    def close(self) -> Any:
        return self._inner.close()


class PacedFileSource(FixedPartitionedSource[str, Any]):
    """A `FileSource` read at a pace; it resumes as the `FileSource` does."""

    def __init__(self, path: Path) -> None:
        self._inner = FileSource(path, batch_size=STOP_READ_LINES)

    def list_parts(self) -> list[str]:
        return self._inner.list_parts()

    def build_part(self, now: datetime, for_part: str, resume_state: Any) -> _PacedPartition:
        return _PacedPartition(self._inner.build_part(now, for_part, resume_state))


def _parse(line: str) -> tuple[str, tuple[int, int]]:
    index, key, value = line.split()
    return key, (int(index), int(value))


def _count_and_sum(acc: tuple[int, int], item: tuple[int, int]) -> tuple[int, int]:
    return acc[0] + 1, acc[1] + item[1]


def stop_flow(input_path: str, out_dir: str) -> Dataflow:
    """The flow of the crash-and-stop test (see above)."""
    source, out = Path(input_path), Path(out_dir)
    flow = Dataflow()

    flow.input("sums_in", PacedFileSource(source))
    flow.map("sums_parse", _parse)
    flow.stateful_map("sums", lambda: 0, _add)
    flow.map("sums_show", lambda kv: (kv[0], f"sum {kv[1][0]} {kv[0]} {kv[1][1]}"))
    flow.output("sums_out", ResumableFileSink(out / "sums.txt"))

    flow.input("windows_in", PacedFileSource(source))
    flow.map("windows_parse", _parse)
    flow.fold_window(
        "windows",
        EventClockConfig(lambda item: _stop_time(item[0]), wait_for_system_duration=STOP_WAIT),
        TumblingWindow(STOP_WINDOW, align_to=STOP_T0),
        lambda: (0, 0),
        _count_and_sum,
    )
    flow.map(
        "windows_show",
        lambda kv: (kv[0], _window_line(kv[0], kv[1][0].open_time, *kv[1][1])),
    )
    flow.output("windows_out", ResumableFileSink(out / "windows.txt"))

    flow.input("batches_in", PacedFileSource(source))
    flow.map("batches_parse", _parse)
    flow.map("batches_index", lambda kv: (kv[0], kv[1][0]))
    flow.batch("batches", STOP_BATCH, timedelta(hours=1))
    flow.map("batches_show", lambda kv: (kv[0], _batch_line(kv[0], kv[1])))
    flow.output("batches_out", ResumableFileSink(out / "batches.txt"))
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
