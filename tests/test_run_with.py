"""aiowax.testing.run_with: a production flow, run on in-memory data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aiowax.connectors.stdio import StdOutSink
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSource, run_with
from aiowax.window import EventClockConfig, TumblingWindow

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def production_flow() -> Dataflow:
    flow = Dataflow()
    flow.input("readings", TestingSource([]))
    flow.map("key", lambda r: (r["sensor"], r))
    flow.reduce_window(
        "max",
        EventClockConfig(lambda r: r["time"], timedelta(0)),
        TumblingWindow(timedelta(minutes=1), T0),
        lambda a, b: a if a["value"] >= b["value"] else b,
    )
    flow.map("fmt", lambda kw: (kw[0], kw[1][0].open_time, kw[1][1]["value"]))
    flow.output("alerts", StdOutSink())
    flow.output("audit", StdOutSink())
    return flow


@pytest.mark.asyncio
async def test_runs_the_flow_on_lists_and_returns_each_output() -> None:
    flow = production_flow()
    readings = [
        {"sensor": "a", "time": T0 + timedelta(seconds=s), "value": v}
        for s, v in [(1, 3.0), (30, 7.0), (61, 1.0)]
    ]
    out = await run_with(flow, {"readings": readings})
    expected = [("a", T0, 7.0), ("a", T0 + timedelta(minutes=1), 1.0)]
    assert out == {"alerts": expected, "audit": expected}
    # The flow given is untouched: its sinks are still the production ones.
    assert isinstance(flow.steps[-1].sink, StdOutSink)  # type: ignore[attr-defined]


@pytest.mark.asyncio
async def test_captures_only_the_outputs_asked_for() -> None:
    out = await run_with(production_flow(), {"readings": []}, outputs=["audit"])
    assert out == {"audit": []}


@pytest.mark.asyncio
async def test_unknown_step_ids_are_value_errors() -> None:
    with pytest.raises(ValueError, match="no input step 'nope'"):
        await run_with(production_flow(), {"nope": []})
    with pytest.raises(ValueError, match="no output step 'max'"):
        await run_with(production_flow(), {}, outputs=["max"])


def test_the_flow_it_runs_keeps_the_flows_name() -> None:
    # Its stats, metrics and live page name the flow as the production run's do.
    flow = production_flow()
    flow.name = "sensors"
    assert flow._with_fields({"audit": {"sink": StdOutSink()}}).name == "sensors"
