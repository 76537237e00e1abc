"""A 0.17.2 DynamicInput: ``build(worker_index, worker_count)`` on each of 2 workers.

Its StatelessSource has 0.17.2's ``next_batch()`` and a ``next_awake()``
that spaces the batches 10 ms apart.
"""

from datetime import datetime, timedelta, timezone

from aiowax.dataflow import Dataflow
from aiowax.inputs import DynamicInput, StatelessSource
from aiowax.testing import TestingOutput, cluster_main

BUILT = []


class CountdownSource(StatelessSource):
    def __init__(self, worker_index):
        self._worker_index = worker_index
        self._left = 3
        self._awake = datetime.now(timezone.utc)

    def next_batch(self):
        if self._left == 0:
            raise StopIteration()
        self._left -= 1
        self._awake += timedelta(milliseconds=10)
        return [f"w{self._worker_index}-{self._left}"]

    def next_awake(self):
        return self._awake


class CountdownInput(DynamicInput):
    def build(self, worker_index, worker_count):
        BUILT.append((worker_index, worker_count))
        return CountdownSource(worker_index)


out = []
flow = Dataflow()
flow.input("inp", CountdownInput())
flow.map(str.upper)
flow.output("out", TestingOutput(out))
cluster_main(flow, [], 0, worker_count_per_proc=2)
print("built:", sorted(BUILT))
# Workers run concurrently: sorted.
print("out:", sorted(out))
