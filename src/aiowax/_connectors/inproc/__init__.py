"""In-process connectors: application code pushes items in and reads results out.

`PushSource` is fed with ``await source.send(item)``; it is bounded, so a
full flow makes senders wait (or `send_nowait` refuse, which a web handler
can turn into a 429). `IterableSource` reads any async iterable.
`BroadcastSink` hands every item to each of its subscribers, read with
``async for``; each subscriber has its own bounded buffer.

A graceful stop (`aiowax.FlowHandle.stop`) loses nothing these sources
accepted: what was sent to a `PushSource`, and what an `IterableSource`'s
iterator already yielded, still flows to the sinks. The engine finds it
through the partitions' private ``drain_on_stop`` hook.

The modules: ``push``, ``iterable`` and ``broadcast``, one per connector,
and ``timing`` (how long they wait before they look again).
"""

from aiowax._connectors.inproc.broadcast import BroadcastSink, Overflow, Subscription
from aiowax._connectors.inproc.iterable import IterableSource, _IterablePartition
from aiowax._connectors.inproc.push import PushSource
from aiowax._connectors.inproc.timing import IDLE_RETURN_SECONDS, REWAKE_SECONDS

__all__ = [
    "BroadcastSink",
    "IDLE_RETURN_SECONDS",
    "IterableSource",
    "Overflow",
    "PushSource",
    "REWAKE_SECONDS",
    "Subscription",
    "_IterablePartition",
]
