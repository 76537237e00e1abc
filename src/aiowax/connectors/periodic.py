"""Bytewax 0.17.2's polling input, `SimplePollingInput`.

The method API has it as `aiowax.inputs.SimplePollingSource`; this module
keeps 0.17.2's import path and name working.
"""

from aiowax._compat.connectors import SimplePollingInput
from aiowax._util import fixup_module_metadata

__all__ = ["SimplePollingInput"]

fixup_module_metadata(__name__, __all__, globals())
