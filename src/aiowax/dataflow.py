"""Defining dataflows: the `Dataflow` builder."""

from aiowax._definition.flow import Dataflow
from aiowax._util import fixup_module_metadata

__all__ = ["Dataflow"]

fixup_module_metadata(__name__, __all__, globals())
