"""In-process connectors: push items in from application code, read results out.

`PushSource` (bounded, with back-pressure) and `IterableSource` (any async
iterable) feed a flow; `BroadcastSink` lets several readers consume its
output with ``async for``.

A graceful stop keeps what the sources accepted: items sent to a
`PushSource` and items an `IterableSource`'s iterator yielded still reach
the sinks. A `PushSource` may feed one run after another (each run reopens
it) until `PushSource.close` ends its input for good; an async iterator is
read by one run. Each `BroadcastSink` reader falls behind only when its own
buffer is full and it takes nothing while the sink lets it run, however
large the flow's batches; ``overflow="block"`` waits for all slow readers at
once.
"""

from aiowax._connectors.inproc import BroadcastSink, IterableSource, PushSource, Subscription
from aiowax._errors import (
    FlowFailedError,
    SourceClosedError,
    SourceFullError,
    SubscriberOverflowError,
)
from aiowax._util import fixup_module_metadata

__all__ = [
    "BroadcastSink",
    "FlowFailedError",
    "IterableSource",
    "PushSource",
    "SourceClosedError",
    "SourceFullError",
    "SubscriberOverflowError",
    "Subscription",
]

fixup_module_metadata(__name__, __all__, globals())
