"""Bytewax 0.17.2 code of every kind runs on aiowax and prints what 0.17.2 printed.

Each script of ``scenarios_0172/`` is 0.17.2 code with the import root
changed: custom inputs and outputs written against 0.17.2's interfaces,
every `Dataflow` method called as 0.17.2 called it, the window operators,
the file connectors, the polling input and the testing helpers, several run
twice on one recovery directory. Its expected output is what the released
wheel printed for it, recorded by ``record_reference.py`` (the command is in
the header of the expected file); this test runs the same script with
aiowax.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from .record_reference import SCENARIOS, Run, runs

RUNS = {run.expected.removesuffix(".txt"): run for run in runs() if run.folder == SCENARIOS}


def _output(run: Run) -> list[str]:
    done = subprocess.run(
        [sys.executable, *run.command("aiowax")],
        cwd=run.folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _expected(name: str) -> list[str]:
    lines = RUNS[name].expected_path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if not line.startswith("# ")]


#: Runs whose output differs from 0.17.2's on purpose (see below), and what
#: in 0.17.2's output shows the first run's input read again by the second.
DIFFERS = {
    "partitioned_input_resume--default-epochs": "'a1 is #4'",
    "custom_sinks--default-epochs": "(5, 'APPLE')",
}


@pytest.mark.parametrize("name", sorted(set(RUNS) - set(DIFFERS)))
def test_scenario_prints_what_bytewax_0172_printed(name: str) -> None:
    assert _output(RUNS[name]) == _expected(name)


@pytest.mark.parametrize("name", sorted(DIFFERS))
def test_a_continuation_within_the_first_epoch_differs_on_purpose(name: str) -> None:
    # Both runs of these scenarios end before 0.17.2's first epoch (10 s)
    # does. 0.17.2 then keeps the keyed state and the sinks' positions of
    # the first run but not the sources' positions: the second run reads
    # the input again from its start, on top of that state (a1 is counted
    # as #4, the sinks write apple twice). aiowax snapshots the sources at
    # the end of the input too, so the second run reads only what was
    # appended, as it does with any epoch interval (and as 0.17.2 does with
    # one epoch per batch: the scenario without --default-epochs).
    same_code_one_epoch_per_batch = name.removesuffix("--default-epochs")
    assert DIFFERS[name] in "\n".join(_expected(name))
    assert _output(RUNS[name]) == _expected(same_code_one_epoch_per_batch)
