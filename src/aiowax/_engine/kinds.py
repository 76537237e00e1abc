"""The operator table: every step kind the engine runs, declared once.

Planning, wiring, routing and the testing helpers read this table; nothing
else lists the step kinds. To add an operator, write its step class (in
`aiowax._definition.steps`, or beside the operator for a private one) and
its operator class (in `aiowax._engine.ops`), then add one line here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from aiowax._definition import steps
from aiowax._engine.ops.base import Operator
from aiowax._engine.ops.batch import BatchOp
from aiowax._engine.ops.keyed import ReduceOp, StatefulMapOp
from aiowax._engine.ops.output import OutputOp
from aiowax._engine.ops.stateless import (
    FilterMapOp,
    FilterOp,
    FlatMapOp,
    InspectEpochOp,
    InspectOp,
    InspectWorkerOp,
    MapOp,
    RedistributeOp,
)
from aiowax._engine.ops.windows.kinds import CollectWindowOp, FoldWindowOp, ReduceWindowOp


class Routing(enum.Enum):
    """Where the items in front of a step go when a run has several workers."""

    #: They stay on the worker that produced them.
    LOCAL = "local"
    #: To the worker that owns their key (keyed state lives there).
    BY_KEY = "by key"
    #: Evenly over all workers.
    SPREAD = "spread"
    #: To the worker that owns their sink partition (partitioned sinks only).
    BY_SINK_PARTITION = "by sink partition"


@dataclass(frozen=True)
class StepKind:
    """One kind of step, as the engine runs it.

    Attributes:
        step: The step class the definition builds.
        operator: The operator class; None for inputs, which source lanes read.
        role: Names the step's main user code in error notes ("map mapper").
        routing: Where items go in front of it when there are several workers.
    """

    step: type[steps.Step]
    operator: type[Operator] | None
    role: str
    routing: Routing = Routing.LOCAL

    @property
    def keyed(self) -> bool:
        """Its state is per key, restored on the worker that owns the key."""
        return self.routing is Routing.BY_KEY


_K = Routing.BY_KEY

#: Every step kind, by step class.
KINDS: dict[type[steps.Step], StepKind] = {
    kind.step: kind
    for kind in (
        StepKind(steps.InputStep, None, "input"),
        StepKind(steps.OutputStep, OutputOp, "output write_batch", Routing.BY_SINK_PARTITION),
        StepKind(steps.MapStep, MapOp, "map mapper"),
        StepKind(steps.FilterStep, FilterOp, "filter predicate"),
        StepKind(steps.FilterMapStep, FilterMapOp, "filter_map mapper"),
        StepKind(steps.FlatMapStep, FlatMapOp, "flat_map mapper"),
        StepKind(steps.InspectStep, InspectOp, "inspect inspector"),
        StepKind(steps.InspectEpochStep, InspectEpochOp, "inspect_epoch inspector"),
        StepKind(steps.InspectWorkerStep, InspectWorkerOp, "inspect_worker inspector"),
        StepKind(steps.RedistributeStep, RedistributeOp, "redistribute", Routing.SPREAD),
        StepKind(steps.StatefulMapStep, StatefulMapOp, "stateful_map mapper", _K),
        StepKind(steps.ReduceStep, ReduceOp, "reduce reducer", _K),
        StepKind(steps.BatchStep, BatchOp, "batch", _K),
        StepKind(steps.FoldWindowStep, FoldWindowOp, "fold_window folder", _K),
        StepKind(steps.ReduceWindowStep, ReduceWindowOp, "reduce_window reducer", _K),
        StepKind(steps.CollectWindowStep, CollectWindowOp, "collect_window", _K),
    )
}


def kind_of(step: steps.Step) -> StepKind:
    """The table entry of ``step``'s kind."""
    try:
        return KINDS[type(step)]
    except KeyError:
        msg = f"{step} has no entry in the operator table"
        raise TypeError(msg) from None
