"""A 0.17.2 PartitionedInput of two files, continued after a clean end.

``build_part(for_part, resume_state)`` and ``next_batch()`` without
``sched``, as 0.17.2 wrote them. The first run reads three lines of each
file; lines are appended and a second run on the same recovery directory
reads only the new ones, its keyed state (a running count) restored.
"""

import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from aiowax.dataflow import Dataflow
from aiowax.inputs import PartitionedInput, StatefulSource
from aiowax.recovery import RecoveryConfig, init_db_dir
from aiowax.testing import TestingOutput, run_main

# With "--default-epochs", the reference's 10 s epochs: both runs end within
# their first epoch. Otherwise every batch is an epoch.
EPOCH_INTERVAL = None if "--default-epochs" in sys.argv else timedelta(0)

BUILT = []


class LinesSource(StatefulSource):
    def __init__(self, path, resume_state):
        self._lines = path.read_text().splitlines()
        self._pos = 0 if resume_state is None else resume_state

    def next_batch(self):
        if self._pos >= len(self._lines):
            raise StopIteration()
        line = self._lines[self._pos]
        self._pos += 1
        return [line]

    def snapshot(self):
        return self._pos


class LinesInput(PartitionedInput):
    def __init__(self, paths):
        self._paths = paths

    def list_parts(self):
        return sorted(self._paths)

    def build_part(self, for_part, resume_state):
        BUILT.append((for_part, resume_state))
        return LinesSource(self._paths[for_part], resume_state)


def count(seen, line):
    seen += 1
    return seen, f"{line} is #{seen}"


def run(paths, db):
    out = []
    BUILT.clear()
    flow = Dataflow()
    flow.input("lines", LinesInput(paths))
    flow.map(lambda line: (line[0], line))
    flow.stateful_map("count", lambda: 0, count)
    flow.output("out", TestingOutput(out))
    run_main(flow, recovery_config=RecoveryConfig(db), epoch_interval=EPOCH_INTERVAL)
    print("built:", sorted(BUILT))
    # Two partitions interleave as they like: sorted.
    print("out:", sorted(out))


with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    db = tmp / "db"
    db.mkdir()
    init_db_dir(db, 2)
    paths = {"a": tmp / "a.txt", "b": tmp / "b.txt"}
    paths["a"].write_text("a1\na2\na3\n")
    paths["b"].write_text("b1\nb2\nb3\n")
    run(paths, db)
    with paths["a"].open("a") as f:
        f.write("a4\na5\n")
    with paths["b"].open("a") as f:
        f.write("b4\n")
    run(paths, db)
