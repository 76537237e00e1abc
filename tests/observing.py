"""What tests see of running flows: the context of every run started in a block.

The engine has no hook for this: the block wraps the wiring step of the
driver, and records each run's context (its settings, its recovery, and its
wired graph, ``ctx.graph.operators``) as soon as the graph is built.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from aiowax._engine import driver
from aiowax._engine.context import RunContext


@contextmanager
def observe_runs(
    on_run: Callable[[RunContext], None] | None = None,
) -> Iterator[list[RunContext]]:
    """Collect the context of every run started inside the block.

    ``on_run`` is also called with each, as soon as its graph is wired.
    """
    seen: list[RunContext] = []
    build = driver.build_graph

    def observed(ctx: RunContext, pipelines: Any) -> Any:
        graph = build(ctx, pipelines)
        seen.append(ctx)
        if on_run is not None:
            on_run(ctx)
        return graph

    with mock.patch.object(driver, "build_graph", observed):
        yield seen


def operators_of(runs: list[RunContext], step_id: str) -> list[Any]:
    """The operators of ``step_id`` (one per worker, by worker) in ``runs``."""
    return [
        op
        for ctx in runs
        if ctx.graph is not None
        for (sid, _), op in sorted(ctx.graph.operators.items())
        if sid == step_id
    ]
