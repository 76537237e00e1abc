"""Telling a flow's in-process sources and sinks when a run starts and ends.

`PushSource` and `BroadcastSink` face application code, which needs to know
about the run as a whole, not about one partition: senders must be taken as
soon as a run has started (before its input task has built the partition),
and readers must end when the run does, failed or not, even when it failed
before the sink was built, or in cluster mode across rebalances, when the
sink's partitions are closed and built again inside one run.

A source or sink opts in with two methods, private to aiowax's own
connectors (the Bytewax API has no run-level callback):

- ``_aiowax_run_starting()``: called before anything of the run is built;
- ``_aiowax_run_ended(failure)``: called once the run is over, with its
  error (``None`` when it finished, was stopped, or was cancelled).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiowax._definition.steps import OutputStep
from aiowax._engine.plan import Pipeline


def _edges(pipelines: list[Pipeline]) -> list[Any]:
    """The sources and sinks of ``pipelines`` that take the run's start and end, once each."""
    found: dict[int, Any] = {}
    for pipeline in pipelines:
        ends: list[object] = [pipeline.input.source]
        ends += [step.sink for step in pipeline.steps if isinstance(step, OutputStep)]
        for end in ends:
            if hasattr(end, "_aiowax_run_ended"):
                found.setdefault(id(end), end)
    return list(found.values())


@contextmanager
def run_edges(pipelines: list[Pipeline]) -> Iterator[None]:
    """Tell the in-process edges of ``pipelines`` that a run starts, then that it ended."""
    edges = _edges(pipelines)
    for edge in edges:
        edge._aiowax_run_starting()
    failure: Exception | None = None
    try:
        yield
    except Exception as error:
        failure = error
        raise
    finally:
        # A cancellation (or KeyboardInterrupt) is not the flow's failure:
        # readers then end as after a stop.
        for edge in edges:
            edge._aiowax_run_ended(failure)
