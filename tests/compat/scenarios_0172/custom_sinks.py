"""0.17.2 sinks: a PartitionedOutput of StatefulSinks resumed, and a DynamicOutput.

The PartitionedOutput keeps 0.17.2's default ``part_fn`` (Adler-32 of the
key), so each key lands in the partition it did with 0.17.2. Its
StatefulSink counts what it wrote; the second run, on the same recovery
directory, gets those counts back as ``resume_state``.
"""

import sys
import tempfile
from datetime import timedelta
from pathlib import Path

from aiowax.dataflow import Dataflow
from aiowax.outputs import DynamicOutput, PartitionedOutput, StatefulSink, StatelessSink
from aiowax.recovery import RecoveryConfig, init_db_dir
from aiowax.testing import TestingInput, run_main

# With "--default-epochs", the reference's 10 s epochs: both runs end within
# their first epoch. Otherwise every batch is an epoch.
EPOCH_INTERVAL = None if "--default-epochs" in sys.argv else timedelta(0)

WRITTEN = {}
RESUMED = []
DYNAMIC = []


class CountingSink(StatefulSink):
    def __init__(self, name, resume_state):
        self._name = name
        self._count = 0 if resume_state is None else resume_state

    def write_batch(self, values):
        for value in values:
            self._count += 1
            WRITTEN.setdefault(self._name, []).append((self._count, value))

    def snapshot(self):
        return self._count


class ThreeParts(PartitionedOutput):
    def list_parts(self):
        return ["p0", "p1", "p2"]

    def build_part(self, for_part, resume_state):
        RESUMED.append((for_part, resume_state))
        return CountingSink(for_part, resume_state)


class ListSink(StatelessSink):
    def __init__(self, worker_index):
        self._worker_index = worker_index

    def write_batch(self, items):
        DYNAMIC.extend(items)


class Collect(DynamicOutput):
    def build(self, worker_index, worker_count):
        return ListSink(worker_index)


def run(keys, db):
    WRITTEN.clear()
    RESUMED.clear()
    DYNAMIC.clear()
    flow = Dataflow()
    flow.input("inp", TestingInput(keys))
    flow.map(lambda key: (key, key.upper()))
    flow.output("parts", ThreeParts())
    flow.output("list", Collect())
    run_main(flow, recovery_config=RecoveryConfig(db), epoch_interval=EPOCH_INTERVAL)
    print("resumed:", sorted(RESUMED))
    for name in sorted(WRITTEN):
        print(f"{name}:", WRITTEN[name])
    print("dynamic:", DYNAMIC)


with tempfile.TemporaryDirectory() as tmp:
    db = Path(tmp)
    init_db_dir(db, 1)
    run(["apple", "banana", "cherry", "date", "elder", "fig", "grape"], db)
    run(["apple", "banana", "cherry", "date", "elder", "fig", "grape", "kiwi", "lime"], db)
