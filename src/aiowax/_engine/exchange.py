"""Links: the channels into one step on every worker, and who sends into them.

A `Link` is what the wiring puts in front of each step (and each drain).
Upstream tasks ask it for an outlet, the step's task on each worker asks it
for an inlet. The two kinds differ only in where items go:

- `LocalLink`: every item stays on the worker that sent it (a channel per
  worker, one sender per upstream task of that worker);
- `InProcessExchange`: a router picks each item's worker, and markers go
  to every worker, stamped with the sender, so the inlets can align epochs
  across all senders.

This is the exchange interface between workers: a broker-backed exchange
(items through a repartition topic) implements the same three methods, and
no operator changes.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from time import perf_counter
from typing import Any

import anyio

from aiowax._engine.channels import (
    AHEAD_LIMIT,
    AlignmentGate,
    AnyOutlet,
    Inlet,
    Outlet,
    Sender,
    channel,
)
from aiowax._engine.errors import DownstreamGone, RoutingFailed, StepFailed
from aiowax._engine.messages import FAILURE, EndOfInput, EpochEnd, Message
from aiowax._engine.routing import Router


class Link(ABC):
    """The bounded channels into one step, one per worker.

    Outlets must all be asked for before the first inlet: an inlet waits for
    an end-of-input from every sender counted at that moment.
    """

    def __init__(self, worker_count: int, start_epoch: int) -> None:
        self.worker_count = worker_count
        self._start_epoch = start_epoch
        self._channels = [channel() for _ in range(worker_count)]
        self._gates = [AlignmentGate(start_epoch - 1) for _ in range(worker_count)]

    @abstractmethod
    def outlet(self, worker: int) -> AnyOutlet:
        """A new sender's end, for a task on ``worker``."""

    @abstractmethod
    def senders_into(self, worker: int) -> int:
        """How many senders the step on ``worker`` hears from."""

    def inlet(self, worker: int) -> Inlet:
        """The receiving end of the step on ``worker``."""
        send, receive, bell = self._channels[worker]
        senders = self.senders_into(worker)
        if not senders:
            # Nothing feeds this worker: its step hears at once that the
            # input ended.
            send.send_nowait(EndOfInput(0))
            senders = 1
        return Inlet(receive, bell, senders, self._start_epoch, self._gates[worker])

    def loopback(self, worker: int) -> Sender:
        """A sender into the step's own channel on ``worker`` (for its timer)."""
        return self._channels[worker][0].clone()

    def seal(self) -> None:
        """Close the first senders: a channel ends once its clones are closed."""
        for send, _, _ in self._channels:
            send.close()


class LocalLink(Link):
    """Items stay on their worker."""

    def __init__(self, worker_count: int, start_epoch: int) -> None:
        super().__init__(worker_count, start_epoch)
        self._senders = [0] * worker_count

    def outlet(self, worker: int) -> AnyOutlet:
        sender = self._senders[worker]
        self._senders[worker] += 1
        return Outlet(self._channels[worker][0].clone(), sender)

    def senders_into(self, worker: int) -> int:
        return self._senders[worker]


class InProcessExchange(Link):
    """Items go to the worker ``route`` picks; markers go to every worker."""

    def __init__(self, worker_count: int, start_epoch: int, route: Router) -> None:
        super().__init__(worker_count, start_epoch)
        self._route = route
        self._senders = 0

    def outlet(self, worker: int) -> AnyOutlet:
        sender = self._senders
        self._senders += 1
        streams = [send.clone() for send, _, _ in self._channels]
        return ExchangeOutlet(streams, sender, self._route, self._gates, self._start_epoch)

    def senders_into(self, worker: int) -> int:
        return self._senders


class ExchangeOutlet:
    """Sends each item to its worker's channel, and markers to all of them."""

    def __init__(
        self,
        streams: list[Sender],
        sender: int,
        route: Router,
        gates: list[AlignmentGate],
        start_epoch: int,
    ) -> None:
        self._streams = streams
        self.sender = sender
        self._route = route
        self._gates = gates
        # The last epoch this sender closed, and how many messages it sent
        # each worker since that worker's inlet last caught up with it.
        self._closed = start_epoch - 1
        self._ahead = [0] * len(streams)
        # Seconds held back at a worker's alignment gate (`_send_parts`), and
        # when the wait in progress began (0.0: none): back-pressure from
        # the slowest worker, counted as blocked, not busy.
        self._gate_waited_s = 0.0
        self._gate_since = 0.0

    async def send(self, batch: list[Any]) -> None:
        try:
            parts = self._route(batch)
        except StepFailed as bad:
            # Items before the bad one still reach their workers.
            await self._send_parts(bad.partial)
            raise self._refused(bad) from None
        await self._send_parts(parts)

    def _refused(self, bad: StepFailed) -> RoutingFailed:
        """The router's failure, as the receiving step's, with the items sent before it."""
        step_id: str = getattr(self._route, "step_id", "")
        return RoutingFailed(bad.error, step_id, sum(map(len, bad.partial)))

    def _held_back(self, worker: int) -> bool:
        """Whether a message to ``worker`` must wait for the epoch to be aligned there."""
        return self._gates[worker].aligned < self._closed and self._ahead[worker] >= AHEAD_LIMIT

    def _count_sent(self, worker: int) -> None:
        """Count a message to ``worker``: one more held back there, or none while aligned."""
        if self._gates[worker].aligned < self._closed:
            self._ahead[worker] += 1
        else:
            self._ahead[worker] = 0

    async def _send_parts(self, parts: list[list[Any]]) -> None:
        sender = self.sender
        for worker, part in enumerate(parts):
            if part:
                if self._held_back(worker):
                    started = self._gate_since = perf_counter()
                    try:
                        await self._gates[worker].wait_for(self._closed)
                    finally:
                        self._gate_waited_s += perf_counter() - started
                        self._gate_since = 0.0
                self._count_sent(worker)
                await self._streams[worker].send((sender, part))

    def has_room(self) -> bool:
        """Whether `send_nowait` can send a batch now: room in every worker's channel."""
        return all(
            stream.has_room() and not self._held_back(worker)
            for worker, stream in enumerate(self._streams)
        )

    def send_nowait(self, batch: list[Any]) -> None:
        """Route and send a batch at once; only after `has_room` said yes."""
        try:
            parts = self._route(batch)
        except StepFailed as bad:
            self._send_parts_nowait(bad.partial)
            raise self._refused(bad) from None
        self._send_parts_nowait(parts)

    def _send_parts_nowait(self, parts: list[list[Any]]) -> None:
        for worker, part in enumerate(parts):
            if part:
                self._count_sent(worker)
                self._streams[worker].send_nowait((self.sender, part))

    async def _broadcast(self, msg: Message) -> None:
        for stream in self._streams:
            await stream.send(msg)

    async def epoch_end(self, epoch: int) -> None:
        await self._broadcast(EpochEnd(epoch, self.sender))
        self._closed = epoch

    async def end_of_input(self, stopped: bool = False) -> None:
        await self._broadcast(EndOfInput(self.sender, stopped))

    async def failure(self) -> None:
        for stream in self._streams:
            with contextlib.suppress(DownstreamGone, anyio.ClosedResourceError):
                await stream.send(FAILURE)

    @property
    def blocked_s(self) -> float:
        """Seconds this outlet's sends waited: for room in a worker's channel, or at its gate."""
        since = self._gate_since
        gate = self._gate_waited_s + (perf_counter() - since if since else 0.0)
        return gate + sum(stream.blocked_total() for stream in self._streams)

    def close(self) -> None:
        for stream in self._streams:
            stream.close()
