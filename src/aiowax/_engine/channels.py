"""Bounded channels between step tasks, and the epoch barrier of sources.

A channel is an anyio memory object stream holding a few micro-batches. The
sending side (`Outlet`) and the receiving side (`Inlet`) add what the engine
needs on top: control markers stamped with the sender, and, on the receiving
side, alignment of those markers across every sender of the channel.

The stream keeps the items and the bound (a full channel makes its senders
wait, through anyio). An idle receiver, though, parks on a `Doorbell` that
senders ring, rather than in anyio's ``receive``: that skips a checkpoint and
an event object per wake-up, which is most of a hop's latency.
"""

from __future__ import annotations

import contextlib
import sys
from collections import deque
from time import perf_counter
from typing import Any, Protocol

import anyio
from anyio import WouldBlock
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from aiowax._engine.aio import Doorbell
from aiowax._engine.errors import DownstreamGone
from aiowax._engine.messages import FAILURE, EndOfInput, EpochEnd, Message

#: Messages (batches or markers) a channel holds before its sender waits.
CHANNEL_CAPACITY = 8


class Sender:
    """One sender's end of a channel."""

    __slots__ = ("_bell", "_nowait", "_stream", "blocked_s", "blocked_since")

    def __init__(self, stream: MemoryObjectSendStream[Message], bell: Doorbell) -> None:
        self._stream = stream
        self._bell = bell
        self._nowait = stream.send_nowait
        #: Seconds spent waiting for room: the back-pressure this sender felt.
        self.blocked_s = 0.0
        #: When the wait in progress began (``perf_counter``), 0.0 if none.
        self.blocked_since = 0.0

    def clone(self) -> Sender:
        return Sender(self._stream.clone(), self._bell)

    def send_nowait(self, msg: Message) -> None:
        """Send without waiting (the channel must have room).

        Raises:
            DownstreamGone: The receiver has stopped.
        """
        try:
            self._nowait(msg)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise DownstreamGone from None
        self._bell.ring()

    def has_room(self) -> bool:
        """Whether a message can go in now without waiting."""
        # anyio's own state: statistics() builds an object at every call,
        # and a lane asks before every async read.
        state = self._stream._state
        return len(state.buffer) < state.max_buffer_size

    async def send(self, msg: Message) -> None:
        """Send, waiting only while the channel is full.

        Raises:
            DownstreamGone: The receiver has stopped.
        """
        try:
            # No checkpoint when there is room: the receive that follows in
            # the sending task yields anyway.
            self._nowait(msg)
        except WouldBlock:
            # Timed only here, where it waits anyway: a send with room costs
            # nothing more.
            started = self.blocked_since = perf_counter()
            try:
                await self._stream.send(msg)
            except anyio.BrokenResourceError:
                raise DownstreamGone from None
            finally:
                self.blocked_s += perf_counter() - started
                self.blocked_since = 0.0
        except anyio.BrokenResourceError:
            raise DownstreamGone from None
        self._bell.ring()

    def close(self) -> None:
        self._stream.close()
        self._bell.ring()

    def blocked_total(self) -> float:
        """Seconds blocked so far, the wait in progress included."""
        since = self.blocked_since
        return self.blocked_s + (perf_counter() - since if since else 0.0)


def channel(
    capacity: int = CHANNEL_CAPACITY,
) -> tuple[Sender, MemoryObjectReceiveStream[Message], Doorbell]:
    """Make one bounded channel: its first sender, its receiver, its doorbell."""
    send, receive = anyio.create_memory_object_stream[Message](capacity)
    bell = Doorbell()
    return Sender(send, bell), receive, bell


#: Data messages a sender may send into an exchange channel whose receiver
#: holds them back for alignment (the sender has closed an epoch the others
#: have not) before it waits for the epoch to be aligned.
AHEAD_LIMIT = CHANNEL_CAPACITY

#: What a released gate says: aligned for good, nobody waits.
_RELEASED = sys.maxsize


class AlignmentGate:
    """The epoch an exchange inlet has aligned, for its senders to wait on.

    A sender that closed epoch ``e`` while the others have not is *ahead*:
    the inlet holds what it sends next until ``e`` is aligned, outside the
    channel's bound. So that held data stays bounded too, a sender ahead
    waits after `AHEAD_LIMIT` messages until the inlet has aligned ``e``;
    the fast worker's source then waits like any back-pressured one.
    """

    __slots__ = ("_advanced", "aligned")

    def __init__(self, aligned: int) -> None:
        self.aligned = aligned
        self._advanced = anyio.Event()

    def advance(self, aligned: int) -> None:
        if aligned > self.aligned:
            self.aligned = aligned
            self._advanced.set()
            self._advanced = anyio.Event()

    def release(self) -> None:
        """The inlet is done (ended, failed, closed): nobody waits any more."""
        self.advance(_RELEASED)

    async def wait_for(self, epoch: int) -> None:
        """Wait until epoch ``epoch`` is aligned (or the gate released)."""
        while self.aligned < epoch:
            await self._advanced.wait()


class AnyOutlet(Protocol):
    """What a step sends through: a plain `Outlet` or an exchange."""

    async def send(self, msg: list[Any]) -> None: ...
    def has_room(self) -> bool: ...
    def send_nowait(self, msg: list[Any]) -> None: ...
    async def epoch_end(self, epoch: int) -> None: ...
    async def end_of_input(self, stopped: bool = False) -> None: ...
    async def failure(self) -> None: ...
    def close(self) -> None: ...
    @property
    def blocked_s(self) -> float: ...


class Outlet:
    """Where a step sends its output: one channel, or none for a pipeline's tail."""

    __slots__ = ("_stream", "sender")

    def __init__(self, stream: Sender | None, sender: int) -> None:
        self._stream = stream
        self.sender = sender

    async def send(self, msg: Message) -> None:
        """Send a batch or marker, waiting only if the channel is full."""
        if self._stream is not None:
            await self._stream.send(msg)

    def has_room(self) -> bool:
        """Whether `send_nowait` can send a batch now."""
        return self._stream is None or self._stream.has_room()

    def send_nowait(self, msg: list[Any]) -> None:
        """Send a batch at once; only after `has_room` said yes.

        Raises:
            DownstreamGone: The receiver has stopped.
        """
        if self._stream is not None:
            self._stream.send_nowait(msg)

    async def epoch_end(self, epoch: int) -> None:
        await self.send(EpochEnd(epoch, self.sender))

    async def end_of_input(self, stopped: bool = False) -> None:
        await self.send(EndOfInput(self.sender, stopped))

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
    def blocked_s(self) -> float:
        """Seconds this outlet's sends waited for room downstream."""
        return 0.0 if self._stream is None else self._stream.blocked_total()


class Inlet:
    """Receives batches and aligned markers from ``senders`` senders.

    An `EpochEnd` comes out once every sender still running has closed that
    epoch, an `EndOfInput` once every sender has ended, failure and tick
    markers at once. Senders are numbered ``0 .. senders-1``.

    Exchange channels carry ``(sender, batch)`` tuples: a sender that has
    closed an epoch the others have not is *ahead*, and what it sends next is
    held back until the epoch is aligned, so no step ever mixes data of the
    next epoch into the current one (what snapshots need).
    """

    __slots__ = (
        "_aligned",
        "_bell",
        "_done",
        "_ended",
        "_gate",
        "_receive",
        "_replay",
        "_senders",
        "_stash",
        "_stopped",
        "_stream",
        "idle_s",
        "idle_since",
    )

    def __init__(
        self,
        stream: MemoryObjectReceiveStream[Message],
        bell: Doorbell,
        senders: int,
        start_epoch: int = 1,
        gate: AlignmentGate | None = None,
    ) -> None:
        self._stream = stream
        self._bell = bell
        self._receive = stream.receive_nowait
        self._senders = senders
        self._aligned = start_epoch - 1
        self._gate = gate
        self._done = [self._aligned] * senders
        self._ended: set[int] = set()
        self._stopped = False
        self._stash: dict[int, deque[Message]] = {}
        self._replay: deque[Message] = deque()
        #: Seconds spent waiting for input (the step had nothing to do).
        self.idle_s = 0.0
        #: When the wait in progress began (``perf_counter``), 0.0 if none.
        self.idle_since = 0.0

    def __aiter__(self) -> Inlet:
        return self

    def _next_nowait(self) -> Message:
        if self._replay:
            return self._replay.popleft()
        return self._receive()

    async def __anext__(self) -> Message:
        while True:
            try:
                msg = self._next_nowait()
            except WouldBlock:
                # Idle: wait for a sender to ring (something sent, or closed).
                started = self.idle_since = perf_counter()
                try:
                    await self._bell.wait()
                finally:
                    self.idle_s += perf_counter() - started
                    self.idle_since = 0.0
                continue
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
            out = self._accept(msg)
            if out is not None:
                return out

    def take_ready(self, limit: int) -> list[list[Any]]:
        """Return data batches that are already waiting, up to ``limit`` items.

        Stops before any marker, which stays first in line; used by steps
        whose per-batch cost is high (async calls) to work on more at once.
        """
        batches: list[list[Any]] = []
        count = 0
        while count < limit:
            try:
                msg = self._next_nowait()
            except (WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            if type(msg) is list or type(msg) is tuple:
                out = self._accept(msg)
                if out is not None:
                    assert type(out) is list
                    batches.append(out)
                    count += len(out)
            else:
                self._replay.appendleft(msg)
                break
        return batches

    def _accept(self, msg: Message) -> Message | None:
        """Process one incoming message; return what the step should see."""
        kind = type(msg)
        if kind is list:
            return msg
        if kind is tuple:
            sender, batch = msg  # type: ignore[misc]
            if sender in self._stash:
                self._stash[sender].append(msg)
                return None
            return batch
        if isinstance(msg, EpochEnd | EndOfInput):
            sender = msg.sender
            if sender in self._stash:
                self._stash[sender].append(msg)
                return None
            if isinstance(msg, EndOfInput):
                self._ended.add(sender)
                self._stopped = self._stopped or msg.stopped
                if len(self._ended) == self._senders:
                    # A graceful stop of any sender makes the whole end one.
                    self._release()
                    return EndOfInput(sender, self._stopped)
            else:
                self._done[sender] = msg.epoch
                if msg.epoch > self._aligned:
                    self._stash[sender] = deque()
            return self._advance()
        if msg is FAILURE:
            self._release()
            if self._stash:
                # What senders sent before the failure still goes through:
                # the data held back for alignment, then the failure.
                for held in self._stash.values():
                    self._replay.extend(m for m in held if type(m) is tuple)
                self._stash.clear()
                self._replay.append(FAILURE)
                return None
        return msg

    def _release(self) -> None:
        if self._gate is not None:
            self._gate.release()

    def _advance(self) -> EpochEnd | None:
        live = [e for s, e in enumerate(self._done) if s not in self._ended]
        aligned = min(live)
        if aligned <= self._aligned:
            return None
        self._aligned = aligned
        for sender in [s for s in self._stash if self._done[s] <= aligned]:
            self._replay.extend(self._stash.pop(sender))
        if self._gate is not None:
            self._gate.advance(aligned)
        return EpochEnd(aligned, -1)

    def close(self) -> None:
        self._stream.close()
        self._release()

    def idle_total(self) -> float:
        """Seconds idle so far, the wait in progress included."""
        since = self.idle_since
        return self.idle_s + (perf_counter() - since if since else 0.0)

    def fill(self) -> tuple[int, int]:
        """Messages waiting in the channel now, and its bound."""
        stats = self._stream.statistics()
        return stats.current_buffer_used + len(self._replay), int(stats.max_buffer_size)


class EpochBarrier:
    """Keeps every source partition of a flow in the same epoch.

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
            return
        try:
            await event.wait()
        except BaseException:
            # Cancelled before the others came: no longer arrived.
            if event is self._event and not event.is_set():
                self._arrived -= 1
            raise

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
