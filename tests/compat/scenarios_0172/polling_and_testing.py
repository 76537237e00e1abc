"""0.17.2's SimplePollingInput, and its testing helpers driven by hand."""

from datetime import timedelta

from aiowax.connectors.periodic import SimplePollingInput
from aiowax.dataflow import Dataflow
from aiowax.inputs import batch
from aiowax.testing import TestingInput, TestingOutput, ffwd_iter, poll_next_batch, run_main


class Counter(SimplePollingInput):
    def __init__(self):
        super().__init__(timedelta(milliseconds=10))
        self._n = 0

    def next_item(self):
        if self._n == 4:
            raise StopIteration()
        self._n += 1
        return self._n


out = []
flow = Dataflow()
flow.input("poll", Counter())
flow.output("out", TestingOutput(out))
run_main(flow)
print("polled:", out)

try:
    SimplePollingInput.__init__(Counter.__new__(Counter), timedelta(milliseconds=1))
except ValueError:
    print("an interval under 10 ms is refused")

inp = TestingInput(range(5), batch_size=2)
print("parts:", inp.list_parts())
part = inp.build_part("iterable", None)
print("first batch:", part.next_batch())
state = part.snapshot()
print("snapshot:", state)
resumed = inp.build_part("iterable", state)
print("resumed batch:", poll_next_batch(resumed))
print("then:", resumed.next_batch())
try:
    resumed.next_batch()
except StopIteration:
    print("then StopIteration")

it = iter(range(10))
ffwd_iter(it, 7)
print("after ffwd_iter:", list(it))
print("batch:", list(batch(range(5), 2)))
