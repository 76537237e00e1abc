"""In-process connectors: push items in from application code, read results out.

`PushSource` (bounded, with back-pressure) and `IterableSource` (any async
iterable) feed a flow; `BroadcastSink` lets several readers consume its
output with ``async for``.
"""

from aiowax._connectors.inproc import BroadcastSink, IterableSource, PushSource, Subscription
from aiowax._errors import SourceClosedError, SourceFullError, SubscriberOverflowError
from aiowax._util import fixup_module_metadata

__all__ = [
    "BroadcastSink",
    "IterableSource",
    "PushSource",
    "SourceClosedError",
    "SourceFullError",
    "SubscriberOverflowError",
    "Subscription",
]

fixup_module_metadata(__name__, __all__, globals())
