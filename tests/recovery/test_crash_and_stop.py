"""Kill and stop a flow run by ``python -m aiowax`` at random moments: it resumes exactly.

The flow (`recovery_crash_flow.stop_flow`) reads a generated file through
three paced `FileSource` pipelines: running sums per key (`stateful_map`),
counts and sums per key in tumbling event-time windows (an `EventClockConfig`
with ``wait_for_system_duration``), and per-key lists (`batch`), each written
by a `FileSink`. It runs under the command line with recovery (``-r``, an
epoch every 50 ms) and is interrupted at random moments, several times per
run of the test:

- SIGKILL, a crash: the next run resumes from the last committed epoch, and
  the `FileSink` truncates its file back to that epoch's length;
- SIGTERM, a graceful stop: the run exits 0 after a final snapshot; open
  windows and batches are snapshotted, not emitted early.

Each restart comes after a random downtime, with another worker count (1, 2
or 3), until a run ends with its input. The files must then hold exactly
what a crash-free run writes: every running sum and window result as
without interruptions (state exactly once, no item dropped as late), every
output at least once, and, since a `FileSink` rewinds what was written after
the epoch it resumes from, none twice.

Downtimes are random between 0 and 0.3 s, to keep the test short, except one
of 2.5 s in two of the cases (after a SIGKILL in one, after a SIGTERM in the
other). A resumed watermark that counted the downtime as elapsed would stand
2 s or more past each key's newest item (it stood 0.5 s, the allowed
lateness, behind it): with windows of 1.6 s holding two items of each key,
0.8 s apart, at least one key's next item then finds its window closed,
whatever the moment of the interruption, and is dropped as late.

A case takes about 4 s (3-4 process starts, 2.5 s of paced reading in all),
or 6-7 s with a long downtime: about 25 s for the five.
`test_an_uninterrupted_run_writes_what_the_model_says` checks the model the
cases are compared with, in about 3 s.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

import recovery_crash_flow as crash_flow
from aiowax.recovery import init_db_dir

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

FLOW_FILE = Path(crash_flow.__file__).resolve()
#: Seconds between epoch ends: many commits, and little to replay after a kill.
SNAPSHOT_INTERVAL = "0.05"
SHORT_DOWNTIME = 0.3
LONG_DOWNTIME = 2.5
#: Longest wait, after the flow's output starts to grow, before a signal.
MOST_RUN_BEFORE_SIGNAL = 0.5
STOPPING = (
    "python -m aiowax: SIGTERM received: stopping gracefully (at most 25 s; "
    "a second signal aborts at once)\n"
)


@dataclass(frozen=True)
class Case:
    seed: int
    #: The first interruption, if not drawn at random.
    first: signal.Signals | None = None
    #: Whether the downtime after the first interruption is `LONG_DOWNTIME`.
    long_downtime: bool = False


CASES = [
    Case(0, signal.SIGKILL, long_downtime=True),
    Case(1, signal.SIGTERM, long_downtime=True),
    Case(2),
    Case(3),
    Case(4),
]


@dataclass(frozen=True)
class Interruption:
    signal: signal.Signals
    #: Seconds after the output starts to grow.
    after: float
    #: Seconds before the next run starts.
    downtime: float


def plan(case: Case) -> tuple[list[Interruption], list[int]]:
    """The interruptions of a case, and the worker count of each run."""
    rng = random.Random(case.seed)
    count = rng.randint(2, 3)
    signals = [rng.choice([signal.SIGKILL, signal.SIGTERM]) for _ in range(count)]
    if case.first is not None:
        signals[0] = case.first
    if len(set(signals)) == 1:  # both kinds in every case
        signals[-1] = signal.SIGTERM if signals[0] == signal.SIGKILL else signal.SIGKILL
    interruptions = [
        Interruption(
            sig,
            rng.uniform(0, MOST_RUN_BEFORE_SIGNAL),
            LONG_DOWNTIME if case.long_downtime and i == 0 else rng.uniform(0, SHORT_DOWNTIME),
        )
        for i, sig in enumerate(signals)
    ]
    workers = [rng.choice([1, 2, 3])]
    for _ in range(count):  # another count at every restart
        workers.append(rng.choice([w for w in (1, 2, 3) if w != workers[-1]]))
    return interruptions, workers


@pytest.fixture(scope="module")
def expected() -> dict[str, list[str]]:
    return crash_flow.stop_expected()


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A recovery directory of 3 partitions, the input file, the output directory."""
    db_dir = tmp_path / "db"
    init_db_dir(db_dir, 3)
    input_path = tmp_path / "input.txt"
    crash_flow.write_input(input_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    return db_dir, input_path, out_dir


def start(db_dir: Path, input_path: Path, out_dir: Path, workers: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOWAX_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    target = f"{FLOW_FILE}:stop_flow({str(input_path)!r}, {str(out_dir)!r})"
    options = ["-r", str(db_dir), "-w", str(workers), "-s", SNAPSHOT_INTERVAL]
    return subprocess.Popen(
        [sys.executable, "-m", "aiowax", target, *options],
        cwd=out_dir.parent,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def output_size(out_dir: Path) -> int:
    return sum(path.stat().st_size for path in out_dir.iterdir())


def wait_for_output(proc: subprocess.Popen[bytes], out_dir: Path, size: int) -> None:
    """Wait until the flow wrote more than ``size`` bytes in all, or ended."""
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        if output_size(out_dir) > size:
            return
        time.sleep(0.005)


def read_lines(out_dir: Path) -> dict[str, list[str]]:
    return {
        name: (out_dir / name).read_text().splitlines() if (out_dir / name).exists() else []
        for name in crash_flow.STOP_OUTPUTS
    }


def compare(got: dict[str, list[str]], expected: dict[str, list[str]]) -> dict[str, object]:
    """What is wrong with the output files, per kind of fault; empty when nothing."""
    faults: dict[str, object] = {}
    for name, want in expected.items():
        have = Counter(got[name])
        wrong = sorted(set(have) - set(want))
        missing = sorted(set(want) - set(have))
        twice = sorted(line for line, n in have.items() if n > 1)
        for fault, lines in (("wrong", wrong), ("missing", missing), ("twice", twice)):
            if lines:
                faults[f"{name} {fault} ({len(lines)})"] = lines[:8]
    return faults


def final_totals(sum_lines: list[str]) -> dict[str, int]:
    """Each key's running total after its last item: the final state of the sums."""
    last: dict[str, tuple[int, int]] = {}
    for line in sum_lines:
        _, index, key, total = line.split()
        if key not in last or int(index) > last[key][0]:
            last[key] = (int(index), int(total))
    return {key: total for key, (_, total) in last.items()}


@pytest.mark.parametrize("case", CASES, ids=[f"seed{c.seed}" for c in CASES])
def test_killed_and_stopped_at_random_moments_then_resumed(
    setup: tuple[Path, Path, Path], expected: dict[str, list[str]], case: Case
) -> None:
    db_dir, input_path, out_dir = setup
    interruptions, workers = plan(case)
    history: list[tuple[int, str, int | None]] = []  # workers, signal, exit status
    for run, worker_count in enumerate(workers):
        size = output_size(out_dir)
        proc = start(db_dir, input_path, out_dir, worker_count)
        if run == len(interruptions):
            _, err = proc.communicate(timeout=60)
            history.append((worker_count, "-", proc.returncode))
            assert (proc.returncode, err.decode()) == (0, ""), history
            break
        interruption = interruptions[run]
        wait_for_output(proc, out_dir, size)
        time.sleep(interruption.after)
        proc.send_signal(interruption.signal)
        _, err = proc.communicate(timeout=60)
        history.append((worker_count, interruption.signal.name, proc.returncode))
        if interruption.signal == signal.SIGKILL:
            expected_outcome = (-signal.SIGKILL, "")
        else:
            expected_outcome = (0, STOPPING)
        # Every interruption must find the flow running: a signal after the
        # end of its input would test nothing.
        assert (proc.returncode, err.decode()) == expected_outcome, history
        time.sleep(interruption.downtime)

    got = read_lines(out_dir)
    faults = compare(got, expected)
    assert not faults, f"runs (workers, signal, exit status): {history}; faults: {faults}"
    assert final_totals(got["sums.txt"]) == final_totals(expected["sums.txt"])
    # The windows are whole: per key, the items counted add up to all of them.
    counted = Counter()
    for line in got["windows.txt"]:
        _, key, _, count, _ = line.split()
        counted[key] += int(count)
    assert counted == Counter(crash_flow.key_of_stop(i) for i in range(crash_flow.STOP_ITEMS))


def test_an_uninterrupted_run_writes_what_the_model_says(
    setup: tuple[Path, Path, Path], expected: dict[str, list[str]]
) -> None:
    # What the cases above are compared with, checked against the flow itself.
    db_dir, input_path, out_dir = setup
    proc = start(db_dir, input_path, out_dir, 2)
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err.decode()) == (0, "")
    assert compare(read_lines(out_dir), expected) == {}


def test_the_plans_interrupt_with_both_signals_and_change_worker_counts() -> None:
    for case in CASES:
        interruptions, workers = plan(case)
        assert {i.signal for i in interruptions} == {signal.SIGKILL, signal.SIGTERM}
        assert all(a != b for a, b in itertools.pairwise(workers))
        assert len(workers) == len(interruptions) + 1
    longs = [
        plan(case)[0][0].signal for case in CASES if plan(case)[0][0].downtime == LONG_DOWNTIME
    ]
    assert sorted(longs) == sorted([signal.SIGKILL, signal.SIGTERM])
