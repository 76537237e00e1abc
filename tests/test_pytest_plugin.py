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
filterwarnings = error
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


def test_a_virtual_clock_test_without_the_asyncio_marker_says_what_is_missing(
    pytester: pytest.Pytester,
) -> None:
    # It did not run, with pytest's generic "async def functions are not
    # natively supported" (new-user helper session).
    pytester.makeini(INI)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.aiowax_virtual_clock
        async def test_forgot_asyncio(aiowax_clock):
            pass
        """
    )
    result = pytester.runpytest("-p", "aiowax.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*aiowax_virtual_clock needs @pytest.mark.asyncio beside it*"])


# -- a user's own pytest_asyncio_loop_factories hook ------------------------

USER_HOOK = """
import asyncio

{enable}


class MyLoop(asyncio.SelectorEventLoop):
    pass


def pytest_asyncio_loop_factories(config, item):
    return {{"mine": MyLoop}}
"""

USES_MY_LOOP = """
import asyncio

import pytest


@pytest.mark.asyncio
async def test_my_loop_factory_is_used():
    assert type(asyncio.get_running_loop()).__name__ == "MyLoop"
"""


@pytest.mark.parametrize(
    ("enable", "args"),
    [
        pytest.param('pytest_plugins = ["aiowax.pytest_plugin"]', (), id="pytest_plugins"),
        pytest.param("", ("-p", "aiowax.pytest_plugin"), id="-p"),
    ],
)
def test_a_conftest_hook_is_asked_before_the_plugin(
    pytester: pytest.Pytester, enable: str, args: tuple[str, ...]
) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(USER_HOOK.format(enable=enable))
    pytester.makepyfile(USES_MY_LOOP)
    result = pytester.runpytest(*args, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_a_conftest_hook_that_returns_none_leaves_the_test_to_the_plugin(
    pytester: pytest.Pytester,
) -> None:
    pytester.makeini(INI)
    pytester.makeconftest(
        """
        pytest_plugins = ["aiowax.pytest_plugin"]

        def pytest_asyncio_loop_factories(config, item):
            return None
        """
    )
    pytester.makepyfile(WINDOWED_TEST)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_conftest_may_import_from_the_plugin_before_enabling_it(
    pytester: pytest.Pytester,
) -> None:
    # A fresh interpreter, as a user's run: the conftest imports the module
    # first, then names it in pytest_plugins. Under filterwarnings = error, a
    # PytestAssertRewriteWarning ("already imported") would fail the run.
    pytester.makeini(INI)
    pytester.makeconftest(
        """
        from aiowax.pytest_plugin import VirtualClockEventLoop

        pytest_plugins = ["aiowax.pytest_plugin"]

        def pytest_asyncio_loop_factories(config, item):
            return {"aiowax-virtual": VirtualClockEventLoop}
        """
    )
    pytester.makepyfile(
        """
        import asyncio

        import pytest

        from aiowax.pytest_plugin import VirtualClockEventLoop

        @pytest.mark.asyncio
        async def test_on_the_virtual_clock():
            assert isinstance(asyncio.get_running_loop(), VirtualClockEventLoop)
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
