"""The steps of a flow: one frozen dataclass per kind, holding what the user passed.

These are the hand-off from the definition to the engine: the engine reads
typed fields (``step.mapper``), never a dict of arguments, and the class of a
step is what the engine's operator table is keyed by. Building them runs no
code of the engine and starts no event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar

from aiowax._definition.inputs import Source
from aiowax._definition.outputs import Sink
from aiowax._definition.window import ClockConfig, WindowConfig


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    """One step of a flow, as the user declared it.

    Attributes:
        kind: The operator, named as the `Dataflow` method that adds it.
        step_id: The user's id, or a generated one for the id-less operators.
        index: Position of the step in its flow.
        max_concurrency: Most calls of its async user code in flight at once
            (None: the engine's default), for the steps that take it.
    """

    kind: ClassVar[str] = "step"
    step_id: str
    index: int
    max_concurrency: int | None = None

    def __str__(self) -> str:
        return f"step {self.step_id!r} ({self.kind})"


@dataclass(frozen=True, slots=True, kw_only=True)
class InputStep(Step):
    """Starts a pipeline: its items come from ``source``."""

    kind: ClassVar[str] = "input"
    source: Source


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputStep(Step):
    """Writes every item to ``sink`` and passes it on."""

    kind: ClassVar[str] = "output"
    sink: Sink


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolableStep(Step):
    """A stateless step whose sync one-item function may run in worker processes.

    Attributes:
        processes: Worker processes (per worker of the run) that run its
            function on chunks of each batch; None runs it in the event
            loop's thread, as every other step.
    """

    processes: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class MapStep(PoolableStep):
    """Replaces each item by ``mapper(item)``."""

    kind: ClassVar[str] = "map"
    mapper: Callable[[Any], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterStep(PoolableStep):
    """Keeps the items ``predicate`` is true for."""

    kind: ClassVar[str] = "filter"
    predicate: Callable[[Any], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterMapStep(PoolableStep):
    """Maps, dropping ``None`` results."""

    kind: ClassVar[str] = "filter_map"
    mapper: Callable[[Any], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class FlatMapStep(PoolableStep):
    """Replaces each item by the elements ``mapper(item)`` yields."""

    kind: ClassVar[str] = "flat_map"
    mapper: Callable[[Any], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class InspectStep(Step):
    """Calls ``inspector(item)`` and passes the item on."""

    kind: ClassVar[str] = "inspect"
    inspector: Callable[[Any], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class InspectEpochStep(Step):
    """Calls ``inspector(epoch, item)`` and passes the item on."""

    kind: ClassVar[str] = "inspect_epoch"
    inspector: Callable[[int, Any], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class InspectWorkerStep(Step):
    """Calls ``inspector(item, worker_index)`` and passes the item on."""

    kind: ClassVar[str] = "inspect_worker"
    inspector: Callable[[Any, int], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class RedistributeStep(Step):
    """Spreads the items evenly over the workers."""

    kind: ClassVar[str] = "redistribute"


@dataclass(frozen=True, slots=True, kw_only=True)
class StatefulMapStep(Step):
    """Maps ``(key, value)`` items through a per-key state."""

    kind: ClassVar[str] = "stateful_map"
    builder: Callable[[], Any]
    mapper: Callable[[Any, Any], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReduceStep(Step):
    """Combines each key's values until ``is_complete``."""

    kind: ClassVar[str] = "reduce"
    reducer: Callable[[Any, Any], Any]
    is_complete: Callable[[Any], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchStep(Step):
    """Gathers each key's values into lists by size and timeout."""

    kind: ClassVar[str] = "batch"
    max_size: int
    timeout: timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowStep(Step):
    """What every window step has: how it tells time and cuts windows.

    Attributes:
        emit_metadata: Emit ``(key, (WindowMetadata, value))``, as the method
            API does; False emits ``(key, value)``, as Bytewax 0.17.2 did.
            The flow sets it from the pipeline's input (False for a 0.17.2
            input class), not the user.
    """

    clock_config: ClockConfig
    window_config: WindowConfig
    emit_metadata: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class FoldWindowStep(WindowStep):
    """Folds each key's values per window."""

    kind: ClassVar[str] = "fold_window"
    builder: Callable[[], Any]
    folder: Callable[[Any, Any], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReduceWindowStep(WindowStep):
    """Reduces each key's values per window."""

    kind: ClassVar[str] = "reduce_window"
    reducer: Callable[[Any, Any], Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class CollectWindowStep(WindowStep):
    """Collects each key's values per window into a list."""

    kind: ClassVar[str] = "collect_window"
