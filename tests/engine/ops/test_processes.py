"""Stateless steps with ``processes=``: their sync function runs in worker processes.

The output must be the plain step's, in the same order and the same epochs;
failures name the step and keep the output before the failing item; the
worker processes are gone when the run ends, however it ends
(`aiowax._engine.ops.processes`). The user functions live in
``process_funcs.py``, which the worker processes import.
"""

from __future__ import annotations

import functools
import gc
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from process_funcs import (
    HoldsALock,
    LoadsOnlyHere,
    exit_on_2,
    fail_on_10,
    fail_on_70,
    fail_once_touched,
    flat_fail_midway,
    gen_up_to,
    hang_after_touch,
    is_odd,
    lock_on_2,
    not_a_bool,
    raise_unpicklable_error,
    repeat_self,
    returns_coroutine,
    scramble,
    sigint_ignored,
    stop_on_3,
    third_or_none,
)

import aiowax
from aiowax._engine.ops.processes import MIN_CHUNK, ChildTraceback, chunk_bounds
from aiowax.dataflow import Dataflow
from aiowax.recovery import RecoveryConfig, init_db_dir
from aiowax.testing import TestingSink, TestingSource, run_main
from flow_helpers import run, simple_flow

#: Seconds: starting worker processes takes a few tenths of a second.
WATCHDOG = 30


def no_children_left() -> bool:
    return multiprocessing.active_children() == []


AddStep = Callable[[Dataflow, int | None], None]


async def run_both(items: list[Any], add: AddStep, batch: int) -> Any:
    """The output of the flow with the plain step and with ``processes=2``, checked equal."""
    outs = []
    for processes in (None, 2):
        flow, out = simple_flow(items, functools.partial(_with, add, processes), batch)
        await run(flow, watchdog=WATCHDOG)
        outs.append(out)
    assert outs[1] == outs[0]
    assert no_children_left()
    return outs[0]


def _with(add: AddStep, processes: int | None, flow: Dataflow) -> None:
    add(flow, processes)


# -- same output as the plain step ---------------------------------------------------


@pytest.mark.asyncio
async def test_map_keeps_the_order_over_many_batches() -> None:
    items = list(range(3000))
    out = await run_both(items, lambda f, p: f.map("m", scramble, processes=p), batch=7)
    assert out == [scramble(x) for x in items]


KINDS: dict[str, AddStep] = {
    "filter": lambda f, p: f.filter("s", is_odd, processes=p),
    "filter_map": lambda f, p: f.filter_map("s", third_or_none, processes=p),
    "flat_map": lambda f, p: f.flat_map("s", repeat_self, processes=p),
    "flat_map-generator": lambda f, p: f.flat_map("s", gen_up_to, processes=p),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", list(KINDS))
async def test_each_kind_gives_the_plain_steps_output(kind: str) -> None:
    out = await run_both(list(range(200)), KINDS[kind], batch=50)
    assert out  # something went through


@pytest.mark.asyncio
async def test_epochs_are_those_of_the_plain_step() -> None:
    runs: list[list[tuple[int, int]]] = []
    for processes in (None, 2):
        seen: list[tuple[int, int]] = []
        flow = Dataflow()
        flow.input("inp", TestingSource(range(40), 4))
        flow.map("m", scramble, processes=processes)
        flow.inspect_epoch(lambda epoch, x, seen=seen: seen.append((epoch, x)))
        flow.output("out", TestingSink([]))
        await run(flow, epoch_interval=timedelta(0), watchdog=WATCHDOG)
        runs.append(seen)
    assert runs[1] == runs[0]
    assert len({epoch for epoch, _ in runs[0]}) == 10


@pytest.mark.asyncio
async def test_several_workers_each_run_their_own_processes() -> None:
    items = list(range(100))
    flow = Dataflow()
    flow.input("inp", TestingSource(items, 10))
    flow.redistribute()
    flow.map("m", scramble, processes=1)
    flow.inspect_worker(lambda x, worker: workers.add(worker))
    out: list[int] = []
    flow.output("out", TestingSink(out))
    workers: set[int] = set()
    await run(flow, workers=2, watchdog=WATCHDOG)
    assert sorted(out) == sorted(scramble(x) for x in items)
    assert workers == {0, 1}
    assert no_children_left()


@pytest.mark.asyncio
async def test_worker_processes_ignore_sigint() -> None:
    flow, out = simple_flow([1], lambda f: f.map("m", sigint_ignored, processes=1))
    await run(flow, watchdog=WATCHDOG)
    assert out == [True]


def test_a_run_resumes_after_an_abort(tmp_path: Path) -> None:
    init_db_dir(tmp_path, 1)
    config = RecoveryConfig(tmp_path)
    items = [*range(6), TestingSource.ABORT(), *range(6, 10)]
    outs: list[list[int]] = []
    for _ in range(2):
        flow, out = simple_flow(items, lambda f: f.map("m", scramble, processes=1), 2)
        run_main(flow, epoch_interval=timedelta(0), recovery_config=config)
        outs.append(out)
        # An abort closes nothing, as a crash would: the processes stop
        # when the run's objects are collected.
        del flow
        gc.collect()
        deadline = time.monotonic() + WATCHDOG
        while not no_children_left() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert no_children_left()
    # The step has no state to snapshot: the second run goes on from the
    # source's position.
    assert outs == [[scramble(x) for x in range(6)], [scramble(x) for x in range(6, 10)]]


def test_chunks_are_as_many_as_processes_unless_too_small() -> None:
    assert chunk_bounds(1, 2) == [0, 1]
    assert chunk_bounds(2 * MIN_CHUNK - 1, 2) == [0, 2 * MIN_CHUNK - 1]
    assert chunk_bounds(2 * MIN_CHUNK, 2) == [0, MIN_CHUNK, 2 * MIN_CHUNK]
    assert chunk_bounds(1001, 3) == [0, 333, 667, 1001]
    assert chunk_bounds(3 * MIN_CHUNK, 8) == [0, MIN_CHUNK, 2 * MIN_CHUNK, 3 * MIN_CHUNK]


# -- failures: the step named, the output before kept, no process left -------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(("fn", "kept"), [(fail_on_70, 70), (fail_on_10, 10)])
async def test_an_error_in_a_worker_process_keeps_the_output_before_it(
    fn: Callable[[int], int], kept: int
) -> None:
    # One batch of 100 in two chunks: the failure is in the second, or in
    # the first (whose partial output comes before the second's).
    flow, out = simple_flow(list(range(100)), lambda f: f.map("m", fn, processes=2), 100)
    with pytest.raises(ValueError, match=f"no {kept}") as info:
        await run(flow, watchdog=WATCHDOG)
    assert info.value.__notes__ == ["raised in step 'm' by the map mapper"]
    cause = info.value.__cause__
    assert isinstance(cause, ChildTraceback)
    assert "process_funcs.py" in str(cause)
    assert out == [x * 10 for x in range(kept)]
    assert no_children_left()


@pytest.mark.asyncio
async def test_a_failing_flat_map_keeps_the_elements_before_the_error() -> None:
    flow, out = simple_flow(
        list(range(8)), lambda f: f.flat_map("fm", flat_fail_midway, processes=2), 8
    )
    with pytest.raises(KeyError) as info:
        await run(flow, watchdog=WATCHDOG)
    assert info.value.__notes__ == ["raised in step 'fm' by the flat_map mapper"]
    assert out == [0, 0, 1, -1, 2, -2, 3, -3, 4, -4, 5]


def test_stopiteration_in_a_worker_process_is_a_runtime_error() -> None:
    flow, out = simple_flow([1, 2, 3, 4], lambda f: f.map("m", stop_on_3, processes=1), 4)
    with pytest.raises(RuntimeError, match="map mapper raised StopIteration on item 3"):
        run_main(flow)
    assert out == [1, 2]


def test_a_filter_predicate_must_still_return_a_bool() -> None:
    flow, out = simple_flow(list(range(6)), lambda f: f.filter("f", not_a_bool, processes=1), 6)
    with pytest.raises(TypeError, match="filter step 'f': the predicate must return a bool"):
        run_main(flow)
    assert out == [0, 1, 2, 3]


def test_an_exception_that_does_not_unpickle_comes_back_as_a_runtime_error() -> None:
    flow, out = simple_flow(
        [1, 2, 3], lambda f: f.map("m", raise_unpicklable_error, processes=1), 3
    )
    with pytest.raises(RuntimeError, match=r"process_funcs\.NeedsTwoArgs: 2/0 \(sent back"):
        run_main(flow)
    assert out == [1]


def test_an_item_that_does_not_pickle_fails_the_run_after_the_items_before_it() -> None:
    # Two chunks, [0:20] and [20:41]; the culprit is in the second.
    items: list[Any] = [*range(25), lambda: None, *range(15)]
    flow, out = simple_flow(items, lambda f: f.map("m", scramble, processes=2), 41)
    with pytest.raises(TypeError, match=r"map step 'm': item <function .*<lambda> at .* cannot be"):
        run_main(flow)
    assert out == [scramble(x) for x in range(25)]
    assert no_children_left()


def test_a_result_that_does_not_pickle_fails_the_run_after_the_results_before_it() -> None:
    flow, out = simple_flow([0, 1, 2, 3], lambda f: f.map("m", lock_on_2, processes=1), 4)
    with pytest.raises(TypeError, match=r"map step 'm': the mapper's result for item 2 cannot be"):
        run_main(flow)
    assert out == [0, 1]


def test_a_worker_process_that_dies_fails_the_run_with_the_step_named() -> None:
    flow, out = simple_flow([0, 1, 2, 3], lambda f: f.map("m", exit_on_2, processes=1), 4)
    with pytest.raises(RuntimeError, match=r"map step 'm': a worker process ended abruptly"):
        run_main(flow)
    assert out == []
    assert no_children_left()


def test_a_sync_function_returning_a_coroutine_is_refused_with_the_reason() -> None:
    flow, out = simple_flow([1, 2], lambda f: f.map("m", returns_coroutine, processes=1), 2)
    with pytest.raises(TypeError, match=r"map step 'm': the mapper returned an awaitable \(coro"):
        run_main(flow)
    assert out == []


def test_a_function_that_does_not_pickle_is_refused_when_the_run_starts() -> None:
    flow, _ = simple_flow([1], lambda f: f.map("m", HoldsALock(), processes=2))
    with pytest.raises(TypeError, match=r"map step 'm': processes=2 sends the mapper .* does not"):
        run_main(flow)
    assert no_children_left()


def test_a_function_the_worker_processes_cannot_load_is_refused_when_the_run_starts() -> None:
    flow, _ = simple_flow([1], lambda f: f.map("m", LoadsOnlyHere(), processes=1))
    with pytest.raises(RuntimeError, match=r"the worker processes could not load the mapper") as e:
        run_main(flow)
    assert isinstance(e.value.__cause__, ImportError)
    assert no_children_left()


@pytest.mark.asyncio
async def test_a_failure_stops_a_chunk_still_running(tmp_path: Path) -> None:
    flag = tmp_path / "started"
    # Two chunks: the first fails once the second has started (and hangs).
    items = [f"fail:{flag}", *["x"] * (MIN_CHUNK - 1), f"hang:{flag}", *["x"] * (MIN_CHUNK - 1)]
    flow, _ = simple_flow(items, lambda f: f.map("m", fail_once_touched, processes=2), len(items))
    start = time.monotonic()
    with pytest.raises(ValueError, match="failed while another chunk runs"):
        await run(flow, watchdog=WATCHDOG)
    assert flag.exists()
    assert time.monotonic() - start < WATCHDOG
    assert no_children_left()


@pytest.mark.asyncio
async def test_cancelling_the_run_stops_a_chunk_still_running(tmp_path: Path) -> None:
    flag = tmp_path / "started"
    flow, out = simple_flow([str(flag)], lambda f: f.map("m", hang_after_touch, processes=1))
    with anyio.fail_after(WATCHDOG):
        async with anyio.create_task_group() as tg:
            tg.start_soon(aiowax.run, flow)
            while not flag.exists():  # the worker process says so: nothing to await
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert out == []
    assert no_children_left()


def _script_env() -> dict[str, str]:
    """The environment of a script run here: it imports ``process_funcs`` and aiowax."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}


# -- a parent killed outright ------------------------------------------------------------

KILLED_PARENT_SCRIPT = """
import sys

from process_funcs import record_pid

from aiowax.dataflow import Dataflow
from aiowax.inputs import DynamicSource, StatelessSourcePartition
from aiowax.testing import TestingSink, run_main


class Once(StatelessSourcePartition):
    # Hands each worker process an item, then waits for ever (until killed).
    def __init__(self):
        self.sent = False

    async def next_batch(self):
        import asyncio

        if self.sent:
            await asyncio.Event().wait()
        self.sent = True
        return [sys.argv[1]] * 8


class Src(DynamicSource):
    def build(self, now, worker_index, worker_count):
        return Once()


if __name__ == "__main__":
    flow = Dataflow()
    flow.input("inp", Src())
    flow.map("m", record_pid, processes=2)
    flow.output("out", TestingSink([]))
    run_main(flow)
"""


def _stat(pid: int | str) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command (state, parent...), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting to be reaped is not)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _children_of(parent: int) -> set[int]:
    """The processes whose parent is ``parent``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(entry.name)
            if fields is not None and int(fields[1]) == parent:
                found.add(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_worker_processes_exit_when_their_parent_is_killed(tmp_path: Path) -> None:
    # helper-56: after a SIGKILL (the OOM killer) the worker processes waited
    # for work for ever, holding the dead run's stdout open.
    script = tmp_path / "killed.py"
    script.write_text(KILLED_PARENT_SCRIPT)
    pids = tmp_path / "pids"
    env = _script_env()
    parent = subprocess.Popen(
        [sys.executable, str(script), str(pids)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + WATCHDOG
        while not (pids.exists() and pids.read_text().strip()):
            assert parent.poll() is None, "the run ended before its processes worked"
            assert time.monotonic() < deadline, "the worker processes did not start"
            time.sleep(0.05)
        # The pool starts every process at once (and a resource tracker).
        children = _children_of(parent.pid)
    finally:
        parent.kill()
        parent.wait()
    assert {int(pid) for pid in pids.read_text().split()} <= children
    assert len(children) >= 2
    # They notice within about a second, and the dead run's stdout then ends.
    assert parent.stdout is not None
    assert parent.stdout.read() == b""  # returns only once no process holds it open
    parent.stdout.close()
    deadline = time.monotonic() + WATCHDOG
    while any(_running(pid) for pid in children):
        assert time.monotonic() < deadline, f"still running: {children}"
        time.sleep(0.05)


# -- a script without a __main__ guard ------------------------------------------------

NO_GUARD_SCRIPT = """
import sys
from pathlib import Path

from process_funcs import scramble

from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSink, TestingSource, run_main

# Each process that runs this file says so: the worker processes import it again.
with Path(sys.argv[1]).open("a") as log:
    print("imported", file=log)
out = []
flow = Dataflow()
flow.input("inp", TestingSource([1, 2, 3]))
flow.map("m", scramble, processes=2)
flow.output("out", TestingSink(out))
run_main(flow)  # no `if __name__ == "__main__":`
"""


def test_a_script_without_a_main_guard_is_told_why_its_processes_end(tmp_path: Path) -> None:
    script = tmp_path / "no_guard.py"
    script.write_text(NO_GUARD_SCRIPT)
    log = tmp_path / "log"
    env = _script_env()
    done = subprocess.run(
        [sys.executable, str(script), str(log)],
        env=env,
        capture_output=True,
        text=True,
        timeout=WATCHDOG,
        check=False,
    )
    assert done.returncode == 1
    # The parent names the step and the likely cause, not the mapper.
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: map step 'm': a worker process of processes=2 ended")
    assert "'if __name__ == \"__main__\":' block" in last
    # Each worker process refused to run the flow again, and says why.
    assert "RuntimeError: run: called while this process, started with 'spawn'" in done.stderr
    # The script ran in the parent and in at least one worker process.
    assert log.read_text().count("imported") >= 2


def test_a_process_that_spawn_is_starting_refuses_to_run_a_flow(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What multiprocessing sets while a spawned process imports __main__.
    monkeypatch.setattr(multiprocessing.current_process(), "_inheriting", True, raising=False)
    flow, out = simple_flow([1], lambda f: f.map("m", scramble))
    with pytest.raises(RuntimeError, match=r"^run: called while this process, started with 'sp"):
        run_main(flow)

    async def embedded() -> None:
        async with aiowax.open_flow(flow):
            pass

    with pytest.raises(RuntimeError, match=r"^open_flow: called while this process, started wi"):
        anyio.run(embedded)
    assert out == []


# -- refused when the step is added ----------------------------------------------------


async def amapper(x: int) -> int:
    return x


async def agen(x: int) -> Any:
    yield x


@pytest.mark.parametrize(
    ("add", "where"),
    [
        (lambda f: f.map("m", amapper, processes=2), "map step 'm'"),
        (lambda f: f.filter("f", amapper, processes=2), "filter step 'f'"),
        (lambda f: f.filter_map("fm", amapper, processes=2), "filter_map step 'fm'"),
        (lambda f: f.flat_map("fl", agen, processes=2), "flat_map step 'fl'"),
    ],
)
def test_an_async_function_is_refused(add: Callable[[Dataflow], None], where: str) -> None:
    with pytest.raises(TypeError, match=f"{where}: processes= runs the .* async"):
        add(Dataflow())


@pytest.mark.parametrize(
    ("value", "error"), [(0, ValueError), (-2, ValueError), (True, TypeError), ("2", TypeError)]
)
def test_processes_must_be_a_positive_int(value: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match=r"map step 'm': processes must be"):
        Dataflow().map("m", scramble, processes=value)


def test_a_lambda_or_a_local_function_is_refused() -> None:
    def local(x: int) -> int:
        return x

    with pytest.raises(TypeError, match=r"map step 'm': .*, and a lambda cannot be pickled"):
        Dataflow().map("m", lambda x: x, processes=1)
    with pytest.raises(TypeError, match=r"flat_map step 'f': .*\.<locals>\.local', defined insi"):
        Dataflow().flat_map("f", local, processes=1)


def test_the_step_holds_processes() -> None:
    flow = Dataflow()
    flow.map("a", scramble, processes=3)
    flow.map("b", scramble)
    assert [s.processes for s in flow.steps] == [3, None]  # type: ignore[attr-defined]
