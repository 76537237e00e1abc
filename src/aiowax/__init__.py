"""aiowax: an asyncio-native stream processor with Bytewax's Dataflow API.

Define a flow with `aiowax.dataflow.Dataflow`, then ``await aiowax.run(flow)``
inside any running event loop, or call `aiowax.testing.run_main` from
synchronous code.
"""

from aiowax._embed import FlowHandle, FlowStatus, open_flow, start_flow
from aiowax._errors import AiowaxError, FlowDefinitionError
from aiowax._run import run
from aiowax._util import fixup_module_metadata
from aiowax._version import __version__

# From its public home, not from aiowax._errors: importing aiowax.inputs here
# lets it claim the class first, so it reports aiowax.inputs (as in the
# reference) whichever of the two modules a program imports first.
from aiowax.inputs import AbortExecution

__all__ = [
    "AbortExecution",
    "AiowaxError",
    "FlowDefinitionError",
    "FlowHandle",
    "FlowStatus",
    "__version__",
    "open_flow",
    "run",
    "start_flow",
]

fixup_module_metadata(__name__, __all__, globals())
