"""A sink that prints."""

from __future__ import annotations

import sys
from typing import Any

from aiowax._definition.outputs import DynamicSink, StatelessSinkPartition


class _PrintPartition(StatelessSinkPartition[Any]):
    def write_batch(self, items: list[Any]) -> None:
        # Looked up per batch so doctest and pytest captures see the output.
        out = sys.stdout
        if items:
            # One write a batch, not print's two an item (unbuffered, with
            # PYTHONUNBUFFERED or -u): processes sharing the terminal or
            # pipe (the copies of -p) would cut each other's lines.
            out.write("\n".join(map(str, items)) + "\n")
        out.flush()


class StdOutSink(DynamicSink[Any]):
    """Print every item on standard output, one per line, with `print`."""

    def build(self, worker_index: int, worker_count: int) -> _PrintPartition:
        return _PrintPartition()
