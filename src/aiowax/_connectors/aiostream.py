"""Interop with aiostream pipelines (the optional ``aiowax[aiostream]`` extra).

aiostream is GPL-3.0 licensed: this module is the only one that imports it,
and nothing in the core imports this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Generic, TypeVar

from aiostream import stream
from aiostream.core import Stream

from aiowax._checks import positive_int
from aiowax._connectors.inproc import BroadcastSink, IterableSource, _IterablePartition

X = TypeVar("X")


class StreamSource(IterableSource[X], Generic[X]):
    """A source reading an aiostream pipeline (a `aiostream.core.Stream`).

    The stream is opened in its own context (``stream.stream()``) when the
    flow starts reading, and closed with the partition.

    Args:
        xs: The aiostream pipeline.
        batch_size: Most items handed to the flow at once.
    """

    def __init__(self, xs: Stream[X], batch_size: int = 1024) -> None:
        if not isinstance(xs, Stream):
            msg = f"StreamSource needs an aiostream Stream, got {xs!r}"
            raise TypeError(msg)
        super().__init__(xs, batch_size)
        self._xs = xs

    def build_part(self, now: datetime, for_part: str, resume_state: None) -> _StreamPartition[X]:
        """Build the partition that reads the stream."""
        return _StreamPartition(self._xs, self.batch_size)


class _StreamPartition(_IterablePartition[X]):
    def __init__(self, xs: Stream[X], batch_size: int) -> None:
        super().__init__(None, batch_size)
        self._xs = xs
        self._context: AbstractAsyncContextManager[Any] | None = None

    async def _open(self) -> AsyncIterator[X]:
        self._context = self._xs.stream()
        streamer: AsyncIterator[X] = await self._context.__aenter__()
        return streamer

    async def _shut(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            await context.__aexit__(None, None, None)


def sink_stream(sink: BroadcastSink[X], buffer: int | None = None) -> Stream[X]:
    """The items of a `BroadcastSink` as an aiostream stream.

    Subscribes at once, so nothing written from now on is missed; compose the
    result with aiostream operators (``sink_stream(sink) | pipe.map(...)``).
    It ends as a `Subscription` does: when the flow ends, or with
    `SubscriberOverflowError` or `FlowFailedError`.

    Args:
        sink: The sink the flow writes to.
        buffer: This reader's buffer, a positive int (default: the sink's).

    Raises:
        TypeError: ``buffer`` is neither an int nor ``None``.
        ValueError: ``buffer`` is not positive.
    """
    if buffer is not None:
        positive_int("sink_stream", "buffer", buffer)
    result: Stream[X] = stream.iterate(sink.subscribe(buffer))
    return result
