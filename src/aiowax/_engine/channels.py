"""Bounded channels between step tasks, and the epoch barrier of sources.

A channel is an anyio memory object stream holding a few micro-batches. The
sending side (`Outlet`) and the receiving side (`Inlet`) add what the engine
needs on top: control markers stamped with the sender, and, on the receiving
side, alignment of those markers across every sender of the channel.
"""

from __future__ import annotations

import contextlib
from typing import Any

import anyio
from anyio import WouldBlock
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aiowax._engine.messages import FAILURE, EndOfInput, EpochEnd, Message

#: Messages (batches or markers) a channel holds before its sender waits.
CHANNEL_CAPACITY = 8


def channel(
    capacity: int = CHANNEL_CAPACITY,
) -> tuple[MemoryObjectSendStream[Message], MemoryObjectReceiveStream[Message]]:
    """Make one bounded channel."""
    return anyio.create_memory_object_stream[Message](capacity)


class DownstreamGone(Exception):
    """The receiving step has stopped; the sender should stop quietly too."""


class Outlet:
    """Where a step sends its output: one channel, or none for a pipeline's tail."""

    __slots__ = ("_send", "_stream", "sender")

    def __init__(self, stream: MemoryObjectSendStream[Message] | None, sender: int) -> None:
        self._stream = stream
        self.sender = sender
        self._send = stream.send_nowait if stream is not None else None

    async def send(self, msg: Message) -> None:
        """Send a batch or marker, waiting only if the channel is full."""
        if self._send is None:
            return
        try:
            # Skipping the checkpoint of ``send`` when there is room saves an
            # event-loop turn per message; the receive that follows yields.
            self._send(msg)
        except WouldBlock:
            assert self._stream is not None
            try:
                await self._stream.send(msg)
            except anyio.BrokenResourceError:
                raise DownstreamGone from None
        except anyio.BrokenResourceError:
            raise DownstreamGone from None

    async def epoch_end(self, epoch: int, snapshots: Any = None) -> None:
        await self.send(EpochEnd(epoch, self.sender, snapshots))

    async def end_of_input(self) -> None:
        await self.send(EndOfInput(self.sender))

    async def failure(self) -> None:
        """Tell downstream to stop after what it holds; never blocks forever."""
        if self._stream is None:
            return
        with contextlib.suppress(DownstreamGone, anyio.ClosedResourceError):
            await self.send(FAILURE)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()

    @property
    def connected(self) -> bool:
        return self._stream is not None


class Inlet:
    """Receives batches and aligned markers from ``senders`` senders.

    An `EpochEnd` comes out once every sender still running has closed that
    epoch, an `EndOfInput` once every sender has ended, and a failure marker
    at once.
    """

    __slots__ = ("_aligned", "_done", "_ended", "_receive", "_senders", "_stream")

    def __init__(self, stream: MemoryObjectReceiveStream[Message], senders: int) -> None:
        self._stream = stream
        self._receive = stream.receive_nowait
        self._senders = senders
        self._done: dict[int, int] = {}
        self._ended: set[int] = set()
        self._aligned = 0

    def __aiter__(self) -> Inlet:
        return self

    async def __anext__(self) -> Message:
        while True:
            try:
                msg = self._receive()
            except WouldBlock:
                try:
                    msg = await self._stream.receive()
                except anyio.EndOfStream:
                    raise StopAsyncIteration from None
            if type(msg) is list:
                return msg
            out = self._align(msg)
            if out is not None:
                return out

    def _align(self, msg: Message) -> Message | None:
        if isinstance(msg, EpochEnd):
            self._done[msg.sender] = msg.epoch
        elif isinstance(msg, EndOfInput):
            self._ended.add(msg.sender)
            if len(self._ended) == self._senders:
                return msg
        else:
            return msg
        live = [e for s, e in self._done.items() if s not in self._ended]
        if len(live) + len(self._ended) < self._senders:
            return None  # some live sender has not closed any epoch yet
        aligned = min(live) if live else 0
        if aligned > self._aligned:
            self._aligned = aligned
            return EpochEnd(aligned, -1)
        return None

    def close(self) -> None:
        self._stream.close()


class EpochBarrier:
    """Keeps every partition of one input in the same epoch.

    A partition that closes an epoch waits here until all others have closed
    it too, so no data of the next epoch overtakes a marker of this one.
    """

    def __init__(self, parties: int) -> None:
        self._parties = parties
        self._arrived = 0
        self._event = anyio.Event()

    async def wait(self) -> None:
        if self._parties <= 1:
            return
        self._arrived += 1
        event = self._event
        if self._arrived >= self._parties:
            self._release()
        else:
            await event.wait()

    def leave(self) -> None:
        """A partition ended: stop waiting for it."""
        self._parties -= 1
        if self._arrived and self._arrived >= self._parties:
            self._release()

    def _release(self) -> None:
        event = self._event
        self._event = anyio.Event()
        self._arrived = 0
        event.set()
