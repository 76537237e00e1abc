"""The graph of a dataflow, for reading, drawing and tooling, without running it.

`to_json` (and `to_dict`, the same as plain data) renders a flow the way
Bytewax's dataflow encoder did, ``{"type": "Dataflow", "steps": [...]}``,
so tools written for that encoder read it. `to_mermaid` draws it as a
Mermaid flowchart. From the command line:

    python -m aiowax.visualize FLOW [-o mermaid|json]

where ``FLOW`` is an import string as ``python -m aiowax`` takes it. See
``docs/visualize.md``.
"""

from __future__ import annotations

from aiowax._cli_visualize import main
from aiowax._graph import to_dict, to_json, to_mermaid
from aiowax._util import fixup_module_metadata

__all__ = ["main", "to_dict", "to_json", "to_mermaid"]

# Not __name__: run as 'python -m aiowax.visualize' this module is __main__,
# and the functions must still name the module a program imports them from.
fixup_module_metadata("aiowax.visualize", __all__, globals())

if __name__ == "__main__":
    raise SystemExit(main())
