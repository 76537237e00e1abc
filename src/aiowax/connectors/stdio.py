"""Standard output as a sink."""

from aiowax._connectors.stdio import StdOutSink
from aiowax._util import fixup_module_metadata

__all__ = ["StdOutSink"]

fixup_module_metadata(__name__, __all__, globals())
