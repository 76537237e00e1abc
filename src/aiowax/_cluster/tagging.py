"""Items that carry where they came from, through the steps before a repartition.

Kafka may hand a source partition to another copy, which rereads it from
the last committed offset: what the old owner had already sent on to a
repartition topic is sent again. The keyed step after the repartition must
apply each input once, so every item on the way there carries its origin
``(source partition, offset)``: a `Tagged` triple. The user's functions
of those steps see only the item; their results take the input's tag. The
repartition sink numbers the items of one origin offset, and the reader of
the repartition topic drops a number it has seen (`repartition`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from inspect import isawaitable
from typing import Any

from aiowax._definition.outputs import DynamicSink, StatelessSinkPartition
from aiowax._definition.steps import (
    FilterMapStep,
    FilterStep,
    FlatMapStep,
    InspectEpochStep,
    InspectStep,
    InspectWorkerStep,
    MapStep,
    OutputStep,
    RedistributeStep,
    Step,
)
from aiowax._engine.usercode import maybe_await
from aiowax._util import is_async_callable

#: ``(origin, offset, item)``: origin names the source partition, offset the message.
Tagged = tuple[str, int, Any]


def _on_item(fn: Callable[..., Any], rewrap: Callable[[Tagged, Any], Any]) -> Callable[..., Any]:
    """``fn`` applied to a tagged item's item, its result re-tagged by ``rewrap``.

    An ``async def`` stays one; a sync function that returns an awaitable
    gets an awaitable back, which the step awaits as it would the original.
    """
    if is_async_callable(fn):

        async def async_wrapper(tagged: Tagged) -> Any:
            return rewrap(tagged, await fn(tagged[2]))

        return async_wrapper

    return _SyncOnItem(fn, rewrap)


class _SyncOnItem:
    """A sync function on tagged items: a class, so it pickles (``processes=`` steps)."""

    def __init__(self, fn: Callable[..., Any], rewrap: Callable[[Tagged, Any], Any]) -> None:
        self.fn = fn
        self.rewrap = rewrap

    def __call__(self, tagged: Tagged) -> Any:
        result = self.fn(tagged[2])
        if isawaitable(result):
            return _later(tagged, result, self.rewrap)
        return self.rewrap(tagged, result)


async def _later(
    tagged: Tagged, result: Awaitable[Any], rewrap: Callable[[Tagged, Any], Any]
) -> Any:
    return rewrap(tagged, await result)


def _mapped(tagged: Tagged, result: Any) -> Tagged:
    return (tagged[0], tagged[1], result)


def _kept(_tagged: Tagged, result: Any) -> Any:
    return result


def _maybe_mapped(tagged: Tagged, result: Any) -> Tagged | None:
    return None if result is None else (tagged[0], tagged[1], result)


def _flat_mapped(tagged: Tagged, result: Any) -> list[Tagged]:
    origin, offset = tagged[0], tagged[1]
    return [(origin, offset, item) for item in result]


def tagged_step(step: Step) -> Step:
    """``step`` as it runs on tagged items (see the module docs).

    Raises:
        TypeError: A step kind with no tagged form (the caller plans cuts
            only after steps that have one).
    """
    if isinstance(step, MapStep):
        return replace(step, mapper=_on_item(step.mapper, _mapped))
    if isinstance(step, FilterStep):
        return replace(step, predicate=_on_item(step.predicate, _kept))
    if isinstance(step, FilterMapStep):
        return replace(step, mapper=_on_item(step.mapper, _maybe_mapped))
    if isinstance(step, FlatMapStep):
        return replace(step, mapper=_on_item(step.mapper, _flat_mapped))
    if isinstance(step, InspectStep):
        return replace(step, inspector=_on_item(step.inspector, _kept))
    if isinstance(step, InspectEpochStep):
        inspect_epoch = step.inspector
        return replace(step, inspector=lambda epoch, tagged: inspect_epoch(epoch, tagged[2]))
    if isinstance(step, InspectWorkerStep):
        inspect_worker = step.inspector
        return replace(step, inspector=lambda tagged, worker: inspect_worker(tagged[2], worker))
    if isinstance(step, RedistributeStep):
        return step
    if isinstance(step, OutputStep) and isinstance(step.sink, DynamicSink):
        return replace(step, sink=_UntaggingSink(step.sink))
    msg = f"{step} cannot run on tagged items"
    raise TypeError(msg)


class _UntaggingPart(StatelessSinkPartition[Any]):
    def __init__(self, part: StatelessSinkPartition[Any]) -> None:
        self._part = part

    async def write_batch(self, items: list[Any]) -> None:
        await maybe_await(self._part.write_batch([tagged[2] for tagged in items]))

    async def close(self) -> None:
        await maybe_await(self._part.close())


class _UntaggingSink(DynamicSink[Any]):
    """A user's sink before a repartition: it gets the items, not their tags."""

    def __init__(self, sink: DynamicSink[Any]) -> None:
        self._sink = sink

    # The engine awaits a build that returns an awaitable, and the user's may.
    async def build(  # type: ignore[override]
        self, worker_index: int, worker_count: int
    ) -> _UntaggingPart:
        part = await maybe_await(self._sink.build(worker_index, worker_count))
        return _UntaggingPart(part)
