"""The pytest plugin users enable to test flows on a virtual clock."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

WINDOWED_TEST = """
import asyncio
from datetime import timedelta

import pytest

import aiowax
from aiowax.dataflow import Dataflow
from aiowax.inputs import FixedPartitionedSource, StatefulSourcePartition
from aiowax.testing import TestingSink


class OneItemThenIdle(FixedPartitionedSource):
    def list_parts(self):
        return ["one"]

    def build_part(self, now, for_part, resume_state):
        return Part()


class Part(StatefulSourcePartition):
    def __init__(self):
        self.sent = False

    async def next_batch(self, sched):
        if self.sent:
            await asyncio.sleep(3600)  # an hour of virtual time
            raise StopAsyncIteration
        self.sent = True
        return [("k", 1)]

    def snapshot(self):
        return None


@pytest.mark.asyncio
@pytest.mark.aiowax_virtual_clock
async def test_batch_times_out_at_exactly_ten_minutes(aiowax_clock):
    seen = []
    flow = Dataflow()
    flow.input("inp", OneItemThenIdle())
    flow.batch("b", 100, timedelta(minutes=10))
    flow.map("when", lambda kv: (aiowax_clock.time(), kv))
    flow.output("out", TestingSink(seen))
    await aiowax.run(flow)
    assert seen == [(600.0, ("k", [1]))]
    assert aiowax_clock.time() == 3600.0


@pytest.mark.asyncio
async def test_unmarked_tests_keep_a_real_loop():
    from aiowax.pytest_plugin import VirtualClockEventLoop
    assert not isinstance(asyncio.get_running_loop(), VirtualClockEventLoop)
"""


INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
filterwarnings =
    error
    # The outer test session may have imported the plugin already.
    ignore::pytest.PytestAssertRewriteWarning
"""


def test_plugin_runs_marked_tests_on_the_virtual_clock(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(WINDOWED_TEST)
    result = pytester.runpytest("-p", "aiowax.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_clock_fixture_refuses_a_real_loop(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.asyncio
        async def test_real(aiowax_clock):
            with pytest.raises(RuntimeError, match="aiowax_virtual_clock"):
                aiowax_clock.time()
        """
    )
    result = pytester.runpytest("-p", "aiowax.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
