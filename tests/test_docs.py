"""The examples of the docs run, so the docs cannot drift from the code."""

from __future__ import annotations

import ast
import asyncio
import re
from pathlib import Path

import pytest

import aiowax
from aiowax.connectors.inproc import PushSource
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSink

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parents[1] / "docs"
CODE = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _blocks(name: str) -> list[str]:
    return CODE.findall((DOCS / name).read_text(encoding="utf-8"))


def test_the_testing_guide_example_passes_as_written(pytester: pytest.Pytester) -> None:
    example = next(b for b in _blocks("testing.md") if b.startswith("# test_page_views.py"))
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    pytester.makepyfile(test_page_views=example)
    result = pytester.runpytest("-p", "aiowax.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_testing_guide_conftest_adds_uvloop_for_the_unmarked_tests(
    pytester: pytest.Pytester,
) -> None:
    conftest = next(b for b in _blocks("testing.md") if b.startswith("# conftest.py"))
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    pytester.makeconftest(conftest)
    pytester.makepyfile(
        """
        import asyncio

        import pytest
        import uvloop

        from aiowax.pytest_plugin import VirtualClockEventLoop


        @pytest.mark.asyncio
        async def test_real_loops(request):
            loop = asyncio.get_running_loop()
            on_uvloop = isinstance(loop, uvloop.Loop)
            assert on_uvloop == request.node.name.endswith("[uvloop]")


        @pytest.mark.asyncio
        @pytest.mark.aiowax_virtual_clock
        async def test_virtual(aiowax_clock):
            assert isinstance(asyncio.get_running_loop(), VirtualClockEventLoop)
            await asyncio.sleep(3600)
            assert aiowax_clock.time() == 3600.0
        """
    )
    result = pytester.runpytest("-v", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines_random(
        ["*test_real_loops[[]asyncio[]] PASSED*", "*test_real_loops[[]uvloop[]] PASSED*"]
    )


# -- examples/web_service.py -------------------------------------------------

WEB_SERVICE = Path(__file__).resolve().parents[1] / "examples" / "web_service.py"


def _method_doc(path: Path, cls: str, method: str) -> str:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, ast.AsyncFunctionDef | ast.FunctionDef) and item.name == method:
                    return ast.get_docstring(item) or ""
    raise AssertionError(f"{cls}.{method} not found in {path}")


def test_the_web_service_example_says_a_graceful_stop_keeps_accepted_readings() -> None:
    # What the example says of FlowHandle.stop is checked just below.
    doc = " ".join(_method_doc(WEB_SERVICE, "SensorWindows", "drain").split())
    assert "FlowHandle.stop" in doc
    assert "drop" not in doc


@pytest.mark.asyncio
async def test_a_graceful_stop_hands_the_flow_what_a_push_source_accepted() -> None:
    # More than the flow holds (8 messages a channel, which the input fills
    # with up to 1024 items each: it gathers reads that do not wait).
    sent = 20_000
    source: PushSource[int] = PushSource(max_buffer=sent, batch_size=1)
    gate = asyncio.Event()
    out: list[int] = []

    async def held(x: int) -> int:
        await gate.wait()
        return x

    flow = Dataflow()
    flow.input("in", source)
    flow.map("held", held)
    flow.output("out", TestingSink(out))
    async with aiowax.open_flow(flow) as handle:
        await source.send_many(list(range(sent)))
        await asyncio.sleep(0.01)
        assert source.qsize() > 0  # accepted, not yet taken by the flow
        stopping = asyncio.create_task(handle.stop())
        await asyncio.sleep(0.01)
        gate.set()
        await stopping
    assert out == list(range(sent))
    assert handle.status is aiowax.FlowStatus.FINISHED
