"""From a `Dataflow` to the pipelines the wiring builds, with its checks."""

from __future__ import annotations

from dataclasses import dataclass

from aiowax._definition.flow import Dataflow
from aiowax._definition.steps import InputStep, OutputStep, Step
from aiowax._engine.kinds import kind_of
from aiowax._errors import FlowDefinitionError


@dataclass(frozen=True)
class Pipeline:
    """An input and the steps that process its items, in order."""

    index: int
    input: InputStep
    steps: tuple[Step, ...]


def compile_flow(flow: object) -> list[Pipeline]:
    """Split ``flow`` into pipelines, or say why it cannot run."""
    if not isinstance(flow, Dataflow):
        msg = f"expected an aiowax.dataflow.Dataflow, got {flow!r}"
        raise TypeError(msg)
    pipelines: list[Pipeline] = []
    current: list[Step] = []
    head: InputStep | None = None
    for step in flow.steps:
        kind_of(step)  # every step must be one the engine knows
        if isinstance(step, InputStep):
            if head is not None:
                pipelines.append(Pipeline(len(pipelines), head, tuple(current)))
            head, current = step, []
            continue
        if head is None:
            msg = f"{step} comes before any input step; every step needs an input upstream"
            raise FlowDefinitionError(msg)
        current.append(step)
    if head is not None:
        pipelines.append(Pipeline(len(pipelines), head, tuple(current)))
    if not pipelines:
        msg = "the dataflow has no input step; add one with Dataflow.input"
        raise FlowDefinitionError(msg)
    if not any(isinstance(s, OutputStep) for p in pipelines for s in p.steps):
        msg = "the dataflow has no output step; add one with Dataflow.output"
        raise FlowDefinitionError(msg)
    return pipelines
