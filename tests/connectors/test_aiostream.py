"""The optional aiostream interop, and that the core never imports aiostream."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

import anyio
import anyio.lowlevel
import pytest
from aiostream import pipe, stream

import aiowax
from aiowax.connectors.aiostream import StreamSource, sink_stream
from aiowax.connectors.inproc import BroadcastSink
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSink
from embed_helpers import stop_after_yielding


@pytest.mark.asyncio
async def test_a_pipeline_feeds_a_flow() -> None:
    out: list[int] = []
    flow = Dataflow()
    flow.input("in", StreamSource(stream.range(6) | pipe.map(lambda x: x * 10)))
    flow.output("out", TestingSink(out))
    with anyio.fail_after(5):
        await aiowax.run(flow)
    assert out == [0, 10, 20, 30, 40, 50]


@pytest.mark.asyncio
async def test_a_flow_output_is_read_as_a_stream() -> None:
    sink: BroadcastSink[int] = BroadcastSink(overflow="block")
    flow = Dataflow()
    flow.input("in", StreamSource(stream.range(10)))
    flow.map("inc", lambda x: x + 1)
    flow.output("out", sink)
    evens = sink_stream(sink) | pipe.filter(lambda x: x % 2 == 0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(aiowax.run, flow)
            assert await stream.list(evens) == [2, 4, 6, 8, 10]


@pytest.mark.asyncio
@pytest.mark.parametrize("batch_size", [1, 64])
async def test_graceful_stop_keeps_what_the_stream_yielded(batch_size: int) -> None:
    """Issue 11 D4 (repro 09, aiostream shape): a graceful stop while the stream
    yields: every item the pipeline gave reaches the sink."""
    for seed in range(8):
        events, yielded, reached = stop_after_yielding(seed)
        out: list[int] = []
        flow = Dataflow()
        flow.input("in", StreamSource(stream.iterate(events), batch_size=batch_size))
        flow.output("out", TestingSink(out))
        with anyio.fail_after(5):
            async with aiowax.open_flow(flow, epoch_interval=timedelta(seconds=1)) as handle:
                await reached.wait()
                await handle.stop()
        assert out == yielded, f"seed {seed}: lost {sorted(set(yielded) - set(out))}"


def test_stream_source_rejects_what_is_not_a_stream() -> None:
    with pytest.raises(TypeError, match="aiostream Stream"):
        StreamSource([1, 2])  # type: ignore[arg-type]


def test_the_core_never_imports_aiostream() -> None:
    probe = (
        "import sys, aiowax, aiowax.dataflow, aiowax.inputs, aiowax.outputs, "
        "aiowax.window, aiowax.testing, aiowax.recovery, aiowax.connectors.stdio, "
        "aiowax.connectors.inproc, aiowax._cli, aiowax._engine.driver\n"
        "print('aiostream' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "False"
