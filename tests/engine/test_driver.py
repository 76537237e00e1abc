"""The driver: what a run says and does as it starts (see also test_failures.py)."""

from __future__ import annotations

import logging

import pytest

import aiowax
from aiowax._cluster.runtime import run_cluster
from aiowax.cluster import KafkaCluster
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSink, TestingSource, run_main


def test_a_pipeline_without_output_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    # P3: a second input whose items reach no output runs, but not silently.
    seen: list[int] = []
    flow = Dataflow()
    flow.input("orders", TestingSource([1, 2, 3]))
    flow.output("orders_out", TestingSink(seen))
    flow.input("refunds", TestingSource([4, 5]))
    flow.map("negate", lambda x: -x)
    with caplog.at_level(logging.WARNING, logger="aiowax"):
        run_main(flow)
    assert seen == [1, 2, 3]
    warned = [r for r in caplog.records if r.name == "aiowax" and r.levelno == logging.WARNING]
    assert len(warned) == 1
    assert "'refunds'" in warned[0].getMessage()
    assert "no output step" in warned[0].getMessage()


def test_pipelines_with_outputs_are_not_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    flow = Dataflow()
    flow.input("orders", TestingSource([1, 2, 3]))
    flow.output("orders_out", TestingSink([]))
    with caplog.at_level(logging.WARNING, logger="aiowax"):
        run_main(flow)
    assert not [r for r in caplog.records if r.name == "aiowax"]


@pytest.mark.parametrize("entry", ["run", "run_cluster"])
def test_a_run_without_an_asyncio_loop_is_refused_saying_how_to_start_one(entry: str) -> None:
    # Under trio (anyio.run(..., backend="trio")) a run started and then
    # failed at random inside a step, blamed on the user's sink (helper-60).
    # Driven here by hand, with no loop at all: what trio looks like to it.
    flow = Dataflow()
    flow.input("inp", TestingSource([1]))
    flow.output("out", TestingSink([]))
    if entry == "run":
        coro = aiowax.run(flow)
    else:
        coro = run_cluster(flow, KafkaCluster(brokers=["broker:9092"], app_id="app"))
    with pytest.raises(RuntimeError, match=r"^run: aiowax runs on an asyncio event loop"):
        coro.send(None)
    coro.close()
