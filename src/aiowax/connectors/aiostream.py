"""Interop with aiostream pipelines; needs the optional ``aiowax[aiostream]`` extra.

aiostream is GPL-3.0 licensed; importing this module is what brings it in.
`StreamSource` feeds a flow from an aiostream pipeline, and `sink_stream`
reads a flow's `aiowax.connectors.inproc.BroadcastSink` as an aiostream
stream.
"""

from aiowax._connectors.aiostream import StreamSource, sink_stream
from aiowax._util import fixup_module_metadata

__all__ = ["StreamSource", "sink_stream"]

fixup_module_metadata(__name__, __all__, globals())
