"""The lock of a recovery directory (`aiowax._recovery.lock`): one run at a time.

Two runs committing into one directory leave a mix of their snapshots for
the next resume (issue 10, D1). A second run is refused at once, in the same
process or another, with the directory and the holder named; the lock dies
with its holder, even after SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import aiowax
from aiowax._recovery.lock import LOCK_NAME, lock_dir
from aiowax.dataflow import Dataflow
from aiowax.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax.recovery import RecoveryConfig, RecoveryError, RecoveryLockedError, init_db_dir
from aiowax.testing import TestingSink, TestingSource, run_main

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX processes and flock")


@pytest.fixture
def db_dir(tmp_path: Path) -> Path:
    path = tmp_path / "recovery"
    init_db_dir(path, 2)
    return path


# -- the lock itself ------------------------------------------------------------------


def test_a_second_lock_in_this_process_is_refused_until_released(db_dir: Path) -> None:
    held = lock_dir(db_dir)
    try:
        with pytest.raises(RecoveryLockedError) as info:
            lock_dir(db_dir)
        message = str(info.value)
        assert str(db_dir) in message
        assert "another run in this process" in message
        assert f"pid {os.getpid()} on host {socket.gethostname()!r}" in message
        assert isinstance(info.value, RecoveryError)
    finally:
        held.release()
    held.release()  # idempotent
    lock_dir(db_dir).release()


@POSIX
def test_a_lock_held_by_another_process_is_refused_with_its_pid(db_dir: Path) -> None:
    hold = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from aiowax._recovery.lock import lock_dir
        lock = lock_dir(Path({str(db_dir)!r}))
        print("held", flush=True)
        sys.stdin.read()
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(RecoveryLockedError, match=f"pid {holder.pid} on host"):
            lock_dir(db_dir)
        holder.stdin.close()
        holder.wait(timeout=30)
    lock_dir(db_dir).release()  # gone with its process


# -- runs ---------------------------------------------------------------------------


class _Gate(StatefulSourcePartition[int, int]):
    """Items 0..count-1, ten a batch; waits for ``gate`` before the second half."""

    def __init__(self, count: int, gate: anyio.Event, started: anyio.Event, pos: int | None):
        self.count = count
        self.gate = gate
        self.started = started
        self.pos = pos or 0

    async def next_batch(self) -> list[int]:
        self.started.set()
        if self.pos >= self.count:
            raise StopAsyncIteration
        if self.pos >= self.count // 2:
            await self.gate.wait()
        batch = list(range(self.pos, min(self.pos + 10, self.count)))
        self.pos += len(batch)
        return batch

    def snapshot(self) -> int:
        return self.pos


class _GateSource(FixedPartitionedSource[int, int]):
    def __init__(self, count: int) -> None:
        self.count = count
        self.gate = anyio.Event()
        self.started = anyio.Event()

    def list_parts(self) -> list[str]:
        return ["numbers"]

    def build_part(self, now: Any, for_part: str, resume_state: int | None) -> _Gate:
        return _Gate(self.count, self.gate, self.started, resume_state)


def _counting(source: Any, out: list[Any]) -> Dataflow:
    flow = Dataflow()
    flow.input("inp", source)
    flow.map("key", lambda x: ("k", x))
    flow.stateful_map("count", lambda: 0, lambda c, x: (c + 1, (x, c + 1)))
    flow.output("out", TestingSink(out))
    return flow


@pytest.mark.asyncio
async def test_a_second_run_in_this_process_is_refused(db_dir: Path) -> None:
    config = RecoveryConfig(db_dir)
    source = _GateSource(100)
    first: list[Any] = []
    second: list[Any] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: aiowax.run(_counting(source, first), recovery_config=config))
        with anyio.fail_after(10):
            await source.started.wait()
        with pytest.raises(RecoveryLockedError) as info:
            await aiowax.run(_counting(TestingSource(range(5)), second), recovery_config=config)
        source.gate.set()
    assert str(db_dir) in str(info.value)
    assert second == []
    # The first run was not disturbed: every item counted once.
    assert first == [("k", (x, x + 1)) for x in range(100)]
    # Its lock went with it: a continuation runs (and reads nothing new).
    third: list[Any] = []
    await aiowax.run(_counting(_GateSource(100), third), recovery_config=config)
    assert third == []


def test_the_lock_is_released_when_a_run_fails(db_dir: Path) -> None:
    def boom(x: int) -> int:
        raise ValueError(x)

    flow = Dataflow()
    flow.input("inp", TestingSource([1]))
    flow.map("boom", boom)
    flow.output("out", TestingSink([]))
    config = RecoveryConfig(db_dir)
    with pytest.raises(ValueError):
        run_main(flow, recovery_config=config)
    lock_dir(db_dir).release()


# -- two processes, from the command line ---------------------------------------------

_FLOW = """
import asyncio
from pathlib import Path

from aiowax.connectors.stdio import StdOutSink
from aiowax.dataflow import Dataflow
from aiowax.inputs import FixedPartitionedSource, StatefulSourcePartition

N = 1000


class Part(StatefulSourcePartition):
    def __init__(self, pos):
        self.pos = pos or 0

    async def next_batch(self):
        if self.pos >= N:
            raise StopAsyncIteration
        if self.pos >= N // 2:
            # The second half waits for the test's go.
            while not Path("release").exists():
                await asyncio.sleep(0.01)
        batch = list(range(self.pos, min(self.pos + 50, N)))
        self.pos += len(batch)
        return batch

    def snapshot(self):
        return self.pos


class Src(FixedPartitionedSource):
    def list_parts(self):
        return ["numbers"]

    def build_part(self, now, for_part, resume_state):
        return Part(resume_state)


flow = Dataflow()
flow.input("inp", Src())
flow.map("key", lambda i: ("k", i))
flow.stateful_map("count", lambda: 0, lambda c, i: (c + 1, f"{c + 1} {i}"))
flow.map("value", lambda kv: kv[1])
flow.output("out", StdOutSink())
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "flow.py").write_text(_FLOW)
    init_db_dir(tmp_path / "rec", 2)
    return tmp_path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOWAX_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _cli(project: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "aiowax", "flow.py", "-r", "rec", "-s", "0.05"],
        cwd=project,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for_holder(project: Path, pid: int) -> None:
    """Until the process ``pid`` holds the lock of ``project/rec``."""
    deadline = time.monotonic() + 30
    lock = project / "rec" / LOCK_NAME
    while time.monotonic() < deadline:
        try:
            if json.loads(lock.read_text()).get("pid") == pid:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.01)
    raise AssertionError("the first run never took the lock")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@POSIX
def test_a_second_process_on_the_directory_exits_at_once(
    project: Path, processes: list[subprocess.Popen[str]]
) -> None:
    # Acceptance: the second exits non-zero within 2 s with the directory
    # named; the first finishes correctly.
    first = _cli(project)
    processes.append(first)
    _wait_for_holder(project, first.pid)
    started = time.monotonic()
    second = _cli(project)
    processes.append(second)
    try:
        out, err = second.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        pytest.fail("the second run was not refused within 2 s")
    assert time.monotonic() - started < 2
    assert second.returncode == 2
    assert out == ""
    assert "aiowax: error: cannot resume from recovery directory 'rec': " in err
    assert "recovery directory rec is in use by another run" in err
    assert f"pid {first.pid} on host" in err
    assert "Traceback" not in err
    (project / "release").touch()
    out, err = first.communicate(timeout=60)
    assert (first.returncode, err) == (0, "")
    assert out.splitlines() == [f"{c} {c - 1}" for c in range(1, 1001)]


@POSIX
def test_sigkill_leaves_no_stale_lock(
    project: Path, processes: list[subprocess.Popen[str]]
) -> None:
    first = _cli(project)
    processes.append(first)
    _wait_for_holder(project, first.pid)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    (project / "release").touch()
    again = _cli(project)
    processes.append(again)
    out, err = again.communicate(timeout=60)
    assert (again.returncode, err) == (0, "")
    # It resumed after what the killed run committed, counts carried over.
    lines = out.splitlines()
    assert lines
    assert lines[-1] == "1000 999"
    assert lines == [f"{c} {c - 1}" for c in range(1001 - len(lines), 1001)]


def test_a_file_system_without_flock_is_a_recovery_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ENOLCK (NFS without a lock daemon): a clear RecoveryError naming the
    # directory, which the CLI reports as an unusable recovery directory.
    import errno
    import fcntl

    from aiowax._recovery import lock

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(RecoveryError, match="cannot lock the recovery directory") as info:
        lock.lock_dir(tmp_path)
    assert str(tmp_path) in str(info.value)
