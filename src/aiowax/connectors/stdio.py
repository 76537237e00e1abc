"""Standard output as a sink (`StdOutput` is Bytewax 0.17.2's name for it)."""

from aiowax._compat.connectors import StdOutput
from aiowax._connectors.stdio import StdOutSink
from aiowax._util import fixup_module_metadata

__all__ = ["StdOutSink", "StdOutput"]

fixup_module_metadata(__name__, __all__, globals())
