"""What a running flow has done: per step and worker, and for the run.

`aiowax.FlowHandle.stats` returns a `FlowStats` at any moment, and
``aiowax.run(flow, on_stats=callback)`` hands one to ``callback`` every
second (``stats_interval``) and once at the end:

    handle = await aiowax.start_flow(tg, flow)
    stats = handle.stats()
    print(stats.status, stats.step("count").items_out, stats.step("count").keys)

The counts are kept per batch, so they cost the flow next to nothing; the
rest (keys, watermarks, open windows, Kafka lag) is read when asked. A
`FlowStats` is plain, immutable data: ``to_dict()`` is JSON-ready. It never
holds an item or a key.
"""

from aiowax._stats.model import FlowStats, StepStats
from aiowax._util import fixup_module_metadata

__all__ = ["FlowStats", "StepStats"]

fixup_module_metadata(__name__, __all__, globals())
