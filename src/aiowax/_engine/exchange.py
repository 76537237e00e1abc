"""Exchanges: moving items between workers before a step that needs it.

Before a stateful step, every ``(key, value)`` item goes to the worker that
owns its key; before `redistribute`, batches are spread evenly. An
`ExchangeOutlet` replaces the plain `Outlet` of the sending step: it splits
each batch per worker, tags each piece with its sender (so the receiving
`Inlet` can align epochs), and broadcasts markers to every worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any
from zlib import crc32

import anyio

from aiowax._engine.channels import DownstreamGone, Sender
from aiowax._engine.failure import StepFailed, note
from aiowax._engine.messages import FAILURE, EndOfInput, EpochEnd, Message
from aiowax._util import describe

#: Keys whose owner is remembered; past that the memo starts afresh.
_MEMO_LIMIT = 65_536


def key_owner(key: str, worker_count: int) -> int:
    """The worker that owns ``key``: the same in every process and run.

    A CRC-32 of the UTF-8 key, not the built-in ``hash``, which Python salts
    per process; snapshots must land on the right worker after a restart,
    even with another worker count.
    """
    return crc32(key.encode("utf-8", "surrogatepass")) % worker_count


def bad_item_error(step_id: str, item: object) -> TypeError:
    """The error for an item a keyed step cannot use."""
    return TypeError(
        f"step {step_id!r} needs (key, value) 2-tuples with a str key, got {describe(item)}"
    )


class KeyRouter:
    """Splits a batch by key owner, checking every item on the way."""

    def __init__(self, step_id: str, worker_count: int) -> None:
        self.step_id = step_id
        self.worker_count = worker_count
        self._memo: dict[str, int] = {}

    def __call__(self, batch: list[Any]) -> list[list[Any]]:
        parts: list[list[Any]] = [[] for _ in range(self.worker_count)]
        appends = [p.append for p in parts]
        owner_of = self._memo.get
        for item in batch:
            if type(item) is not tuple or len(item) != 2 or type(key := item[0]) is not str:
                index = next(i for i, x in enumerate(batch) if x is item)
                raise _RouteError(parts, bad_item_error(self.step_id, item), index)
            owner = owner_of(key)
            if owner is None:
                owner = self._owner(key)
            appends[owner](item)
        return parts

    def _owner(self, key: str) -> int:
        memo = self._memo
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        owner = memo[key] = key_owner(key, self.worker_count)
        return owner


class PartRouter:
    """Sends each ``(key, value)`` to the worker owning its sink partition.

    Partition ``i`` of a `FixedPartitionedSink` lives on worker
    ``i % worker_count``; ``part_fn(key) % part_count`` picks the partition.
    """

    def __init__(self, step_id: str, sink: Any, worker_count: int, part_count: int) -> None:
        self.step_id = step_id
        self.worker_count = worker_count
        self.part_fn = sink.part_fn
        self.part_count = part_count

    def __call__(self, batch: list[Any]) -> list[list[Any]]:
        n = self.worker_count
        parts: list[list[Any]] = [[] for _ in range(n)]
        for i, item in enumerate(batch):
            if type(item) is not tuple or len(item) != 2 or type(item[0]) is not str:
                raise _RouteError(parts, bad_item_error(self.step_id, item), i)
            try:
                part = self.part_fn(item[0]) % self.part_count
            except Exception as error:
                note(error, self.step_id, "output part_fn")
                raise _RouteError(parts, error, i) from None
            parts[part % n].append(item)
        return parts


class RoundRobin:
    """Splits each batch into even, contiguous slices, rotating the first."""

    def __init__(self, worker_count: int) -> None:
        self.worker_count = worker_count
        self._next = 0

    def __call__(self, batch: list[Any]) -> list[list[Any]]:
        n = self.worker_count
        parts: list[list[Any]] = [[] for _ in range(n)]
        size, extra = divmod(len(batch), n)
        start = 0
        for j in range(n):
            w = (self._next + j) % n
            end = start + size + (1 if j < extra else 0)
            parts[w] = batch[start:end]
            start = end
        self._next = (self._next + max(extra, 1)) % n
        return parts


class _RouteError(Exception):
    def __init__(self, routed: list[list[Any]], error: Exception, index: int) -> None:
        super().__init__(error)
        self.routed = routed
        self.error = error
        self.index = index


class ExchangeOutlet:
    """Sends each item to its worker's channel, and markers to all of them."""

    def __init__(
        self,
        streams: list[Sender],
        sender: int,
        route: Callable[[list[Any]], list[list[Any]]],
    ) -> None:
        self._streams = streams
        self.sender = sender
        self._route = route

    async def _send_to(self, worker: int, msg: Message) -> None:
        await self._streams[worker].send(msg)

    async def send(self, batch: list[Any]) -> None:
        try:
            parts = self._route(batch)
        except _RouteError as bad:
            # Items before the bad one still reach their workers.
            await self._send_parts(bad.routed)
            raise StepFailed(bad.error) from None
        await self._send_parts(parts)

    async def _send_parts(self, parts: list[list[Any]]) -> None:
        sender = self.sender
        for worker, part in enumerate(parts):
            if part:
                await self._send_to(worker, (sender, part))

    async def _broadcast(self, msg: Message) -> None:
        for worker in range(len(self._streams)):
            await self._send_to(worker, msg)

    async def epoch_end(self, epoch: int) -> None:
        await self._broadcast(EpochEnd(epoch, self.sender))

    async def end_of_input(self) -> None:
        await self._broadcast(EndOfInput(self.sender))

    async def failure(self) -> None:
        for worker in range(len(self._streams)):
            with contextlib.suppress(DownstreamGone, anyio.ClosedResourceError):
                await self._send_to(worker, FAILURE)

    def close(self) -> None:
        for stream in self._streams:
            stream.close()
