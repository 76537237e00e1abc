"""Five examples of Bytewax 0.17.2's repository print what released 0.17.2 printed.

Each example in ``examples_0172/examples`` is Bytewax's file with only the
import root changed (see ``examples_0172/README.md``). The expected output of
each is what the released wheel printed for the same file, recorded by
``record_reference.py`` with the command named in the expected file's
header; this test runs the same command with aiowax.

The reference emits the windows of several keys in hash order, which changes
from run to run, so outputs of window steps are compared as sorted lines;
where ties are broken in that order (apriori's top ten), as described there.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from .record_reference import EXAMPLES as EXAMPLES_DIR
from .record_reference import Run, runs

EXAMPLES = {run.expected.removesuffix(".txt"): run for run in runs() if run.folder == EXAMPLES_DIR}


def _expected(run: Run) -> list[str]:
    lines = run.expected_path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if not line.startswith("# ")]


def _run_with_aiowax(run: Run) -> list[str]:
    done = subprocess.run(
        [sys.executable, *run.command("aiowax")],
        cwd=run.folder,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _same_lines(got: list[str], expected: list[str]) -> None:
    assert got == expected


def _same_sorted_lines(got: list[str], expected: list[str]) -> None:
    # reduce_window emits each key's window when it closes; the reference
    # closes them in hash order, a different one on every run.
    assert sorted(got) == sorted(expected)


def _same_top_counts(got: list[str], expected: list[str]) -> None:
    # Two "most common" tables. Counter.most_common breaks ties in insertion
    # order, which is the order the reference emitted its windows in: hash
    # order, different on every run. So the lines of each count are compared
    # as sets, except those of the smallest count shown, which the cut may
    # split anywhere: only how many there are is compared.
    def tables(lines: list[str]) -> list[list[tuple[int, str]]]:
        out: list[list[tuple[int, str]]] = []
        for line in lines:
            if line.startswith("most popular"):
                out.append([])
            elif not line.startswith("count"):
                out[-1].append((int(line.split()[0]), line))
        return out

    assert [line for line in got if not line[:1].isspace()] == [
        line for line in expected if not line[:1].isspace()
    ]
    for mine, theirs in zip(tables(got), tables(expected), strict=True):
        assert [count for count, _ in mine] == [count for count, _ in theirs]
        cut = min(count for count, _ in theirs)
        assert {line for count, line in mine if count > cut} == {
            line for count, line in theirs if count > cut
        }


COMPARE: dict[str, Callable[[list[str], list[str]], None]] = {
    "wordcount": _same_sorted_lines,
    "subflow": _same_sorted_lines,
    "csv_input": _same_lines,
    "batch_operator": _same_lines,
    "apriori": _same_top_counts,
}


def test_the_five_examples_are_the_ones_recorded() -> None:
    assert sorted(EXAMPLES) == sorted(COMPARE)


#: Examples that window on the system clock: 5 s tumbling windows aligned to
#: the clock, so a run that happens to cross a multiple of 5 s splits its
#: counts over two windows (in Bytewax as well). Such a run is tried again.
SYSTEM_CLOCK = frozenset({"wordcount", "subflow", "apriori"})


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", sorted(COMPARE))
def test_example_prints_what_bytewax_0172_printed(name: str) -> None:
    run = EXAMPLES[name]
    if name in SYSTEM_CLOCK:
        try:
            COMPARE[name](_run_with_aiowax(run), _expected(run))
        except AssertionError:
            pass
        else:
            return
    COMPARE[name](_run_with_aiowax(run), _expected(run))


def test_the_examples_use_only_aiowax() -> None:
    for run in EXAMPLES.values():
        text = (run.folder / run.args[-1]).read_text(encoding="utf-8")
        assert "bytewax" not in text
        assert "from aiowax." in text
