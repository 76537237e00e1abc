"""The flow of the Kafka crash test, run by ``python -m aiowax`` and SIGKILLed.

``make_flow(BOOTSTRAP, TOPIC, OUT)`` reads every partition of ``TOPIC`` to
its end (``tail=False``, ``messages=True``), counts the messages of each key
(`stateful_map`) and writes ``partition offset key count`` per message to
``OUT`` through a `FileSink` (which rewinds to the resumed epoch). A map
pauses now and then so that a run lasts long enough to be killed mid-way.
The Kafka connector is imported inside the factory: pytest's doctest
collection imports this module too.
"""

from __future__ import annotations

import time
from typing import Any

from aiowax.connectors.files import FileSink
from aiowax.dataflow import Dataflow

#: Read batches: small, so that there are many epochs to resume from.
BATCH = 20
#: The map pauses `PAUSE` seconds on every `PAUSE_EVERY`-th message: about
#: 0.8 s in all for the test's 2,000 messages. A blocking sleep, on purpose:
#: it paces the whole run, whatever the map's concurrency.
PAUSE = 0.003
PAUSE_EVERY = 8


def _pace(msg: Any) -> Any:
    if msg.offset % PAUSE_EVERY == 0:
        time.sleep(PAUSE)
    return msg


def _count(count: int, where: tuple[int, int]) -> tuple[int, tuple[int, int, int]]:
    count += 1
    return count, (*where, count)


def make_flow(bootstrap: str, topic: str, out: str) -> Dataflow:
    from aiowax.connectors.kafka import KafkaSource

    flow = Dataflow()
    flow.input("in", KafkaSource([bootstrap], [topic], tail=False, batch_size=BATCH, messages=True))
    flow.map("pace", _pace)
    flow.map("key", lambda m: (m.key.decode(), (m.partition, m.offset)))
    flow.stateful_map("count", lambda: 0, _count)
    flow.map("show", lambda kv: (kv[0], f"{kv[1][0]} {kv[1][1]} {kv[0]} {kv[1][2]}"))
    flow.output("out", FileSink(out))
    return flow
