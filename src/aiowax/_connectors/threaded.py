"""Partitions whose I/O blocks: the reference's sync methods, and the async path the engine prefers.

A connector whose reads or writes block (a file, a Kafka client) keeps the
synchronous partition methods of the reference, so a test can drive a
partition directly, and offers the engine a private async hook that does
the same work in a worker thread, so the event loop never waits on it:
``_aiowax_awrite_batch`` here (the engine's lookup is in
`aiowax._engine.ops.output`).
"""

from __future__ import annotations

from typing import Any

from aiowax._engine.clock import run_in_thread


class ThreadedWrites:
    """``write_batch`` by ``_write``: in the caller's thread, or the engine's worker thread.

    Subclasses implement ``_write(items)``, which blocks until the items are
    written; put this class first among the bases, before the sink
    partition interface it implements.
    """

    def _write(self, items: list[Any]) -> None:
        raise NotImplementedError

    def write_batch(self, items: list[Any]) -> None:
        """Write ``items``, here in the calling thread; returns once they are written."""
        if items:
            self._write(items)

    async def _aiowax_awrite_batch(self, items: list[Any]) -> None:
        """`write_batch` in a worker thread: what the engine calls."""
        if items:
            await run_in_thread(self._write, items)
