"""Record what released Bytewax 0.17.2 prints for the examples and scenarios here.

Run it with the interpreter of a venv that has the wheel installed::

    python3 -m venv /tmp/bw017 && /tmp/bw017/bin/pip install -q bytewax==0.17.2
    /tmp/bw017/bin/python tests/compat/record_reference.py

It copies ``examples_0172/`` and ``scenarios_0172/`` to a temporary
directory, turns their import root back from ``aiowax`` to ``bytewax``, runs
each script there as Bytewax runs it, and writes its standard output to the
folder's ``expected/`` under a header naming the command. The tests
(``test_examples_0172.py``, ``test_scenarios_0172.py``) run the same
commands with aiowax, from `runs`, and compare.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE / "examples_0172"
SCENARIOS = HERE / "scenarios_0172"


@dataclass(frozen=True)
class Run:
    """One script run: where, with what arguments, and where its output is kept.

    ``args`` follow the interpreter; ``"{runner}"`` stands for ``-m
    bytewax.run`` or ``-m aiowax``.
    """

    folder: Path
    args: tuple[str, ...]
    expected: str

    def command(self, root: str) -> list[str]:
        """The arguments after the interpreter, for the import root ``root``."""
        runner = {"bytewax": ["-m", "bytewax.run"], "aiowax": ["-m", "aiowax"]}[root]
        out: list[str] = []
        for arg in self.args:
            out.extend(runner if arg == "{runner}" else [arg])
        return out

    @property
    def expected_path(self) -> Path:
        """The file holding the reference's output."""
        return self.folder / "expected" / self.expected


def runs() -> list[Run]:
    """Every recorded run: the five examples, then the scenarios."""
    examples = [
        Run(EXAMPLES, ("{runner}", f"examples/{name}.py"), f"{name}.txt")
        for name in ("wordcount", "subflow", "csv_input", "batch_operator")
    ]
    # It runs its two flows itself, at import, and prints their results.
    examples.append(Run(EXAMPLES, ("examples/apriori.py",), "apriori.txt"))
    scenarios = [
        Run(SCENARIOS, (f"{path.name}",), f"{path.stem}.txt")
        for path in sorted(SCENARIOS.glob("*.py"))
    ]
    scenarios += [
        Run(SCENARIOS, (f"{name}.py", "--default-epochs"), f"{name}--default-epochs.txt")
        for name in ("partitioned_input_resume", "custom_sinks")
    ]
    return examples + scenarios


def _copy_as_bytewax(folder: Path, dest: Path) -> None:
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("expected", "__pycache__"))
    for path in dest.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        path.write_text(re.sub(r"\baiowax\b", "bytewax", text), encoding="utf-8")


def main() -> None:
    """Record every run's output with the running interpreter's Bytewax."""
    with tempfile.TemporaryDirectory() as tmp:
        copies = {}
        for folder in (EXAMPLES, SCENARIOS):
            copies[folder] = Path(tmp) / folder.name
            _copy_as_bytewax(folder, copies[folder])
        for run in runs():
            args = run.command("bytewax")
            done = subprocess.run(
                [sys.executable, *args],
                cwd=copies[run.folder],
                capture_output=True,
                text=True,
                check=True,
            )
            shown = " ".join([sys.executable, *args])
            header = (
                f"# Bytewax 0.17.2's output: `{shown}`, run by record_reference.py\n"
                f"# in a copy of {run.folder.name}/ with the import root back to bytewax.\n"
            )
            run.expected_path.write_text(header + done.stdout, encoding="utf-8")
            print(f"recorded {run.expected}: {len(done.stdout.splitlines())} lines")


if __name__ == "__main__":
    main()
