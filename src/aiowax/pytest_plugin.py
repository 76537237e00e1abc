"""A pytest plugin for testing flows on a virtual clock.

Enable it in a ``conftest.py`` with ``pytest_plugins = ["aiowax.pytest_plugin"]``
(or ``pytest -p aiowax.pytest_plugin``); it needs pytest-asyncio 1.5 or
later. Then mark an async test with both ``@pytest.mark.asyncio`` and
``@pytest.mark.aiowax_virtual_clock``: it runs on an event loop whose clock
jumps straight to the next timer whenever every task is waiting, so batch
timeouts, window closes and polling intervals of hours take milliseconds,
and happen at exact times. Other async tests keep an ordinary event loop.

The ``aiowax_clock`` fixture tells the virtual time (``loop.time()``, from
0) and the wall time aiowax sees (`VIRTUAL_EPOCH` plus that).

The plugin implements pytest-asyncio's ``pytest_asyncio_loop_factories``
hook, and answers last: if your ``conftest.py`` implements it too, the first
answer that is not ``None`` wins, so yours is used. Return ``None`` there
for the tests marked ``aiowax_virtual_clock`` to leave them to this plugin
(or return ``{"aiowax-virtual": VirtualClockEventLoop}`` for them yourself).

A ``conftest.py`` may import from this module before it names it in
``pytest_plugins``: the module has no assertions, and opts out of pytest's
assertion rewriting (PYTEST_DONT_REWRITE), so pytest does not warn that it
was imported too early to be rewritten.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import pytest

from aiowax._testing.virtual import VIRTUAL_EPOCH, VirtualClockEventLoop

__all__ = ["VIRTUAL_EPOCH", "VirtualClock", "VirtualClockEventLoop"]

MARKER = "aiowax_virtual_clock"


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker."""
    config.addinivalue_line(
        "markers",
        f"{MARKER}: run this asyncio test on aiowax's virtual-clock event loop",
    )


# pytest-asyncio takes the first answer that is not None (a firstresult
# hook): trylast lets every conftest answer before this plugin, however the
# plugin was enabled (-p registers it before the conftests, pytest_plugins
# in a conftest after, and pluggy asks the latest registered first).
@pytest.hookimpl(optionalhook=True, trylast=True)
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Virtual-clock loop for marked tests, the usual loop for the others."""
    if item.get_closest_marker(MARKER) is not None:
        return {"aiowax-virtual": VirtualClockEventLoop}
    return {"asyncio": asyncio.new_event_loop}


def _asyncio_mode(config: pytest.Config) -> str:
    """pytest-asyncio's mode, as it reads it: the option, else the ini value."""
    try:
        mode = config.getoption("asyncio_mode") or config.getini("asyncio_mode")
    except ValueError:  # pytest-asyncio is not enabled
        return "strict"
    return str(mode)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """An async test marked for the virtual clock but not for asyncio: say what is missing.

    In pytest-asyncio's strict mode such a test does not run at all, and
    pytest's own message ("async def functions are not natively
    supported") does not say which marker is missing.
    """
    if item.get_closest_marker(MARKER) is None or item.get_closest_marker("asyncio"):
        return
    if not inspect.iscoroutinefunction(getattr(item, "obj", None)):
        return
    if _asyncio_mode(item.config) != "strict":
        return  # auto mode runs every async test
    msg = (
        f"{item.nodeid}: @pytest.mark.{MARKER} needs @pytest.mark.asyncio beside it: "
        "in pytest-asyncio's strict mode an async test runs only when marked asyncio"
    )
    pytest.fail(msg, pytrace=False)


class VirtualClock:
    """What a test sees of the virtual clock of its running loop."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        if not isinstance(loop, VirtualClockEventLoop):
            msg = (
                "aiowax_clock needs the virtual-clock loop: mark the test with "
                f"@pytest.mark.asyncio and @pytest.mark.{MARKER}"
            )
            raise RuntimeError(msg)
        self._loop = loop

    def time(self) -> float:
        """Seconds of virtual time since the loop started."""
        return self._loop.time()

    def now(self) -> datetime:
        """The wall time aiowax sees now (UTC)."""
        return self._loop.clock.now()

    def advance(self, seconds: float) -> None:
        """Move the clock forward by hand (timers due meanwhile fire next)."""
        self._loop.advance(seconds)


@pytest.fixture
def aiowax_clock() -> Any:
    """The virtual clock of the running test (see the module docs)."""
    return _LazyClock()


class _LazyClock:
    # Sync fixtures run outside the test's loop: find the loop on first use.
    def __getattr__(self, name: str) -> Any:
        return getattr(VirtualClock(), name)
