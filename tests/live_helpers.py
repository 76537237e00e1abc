"""What the live page's tests share: a flow of two pipelines, and a server for it.

Used by ``tests/test_asgi.py`` and ``tests/test_live_page_browser.py``. The
flow is fed by the test through `PushSource`s; an order ``"poison"`` makes
it fail, and clicks marked ``jam`` wait at ``enrich`` until ``gate`` opens,
so its input channel fills up (back-pressure). Everything the tests wait for
is a condition polled under ``fail_after``, never a fixed sleep.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import anyio
import uvicorn

import aiowax
from aiowax.connectors.inproc import PushSource
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSink
from aiowax.window import EventClockConfig, TumblingWindow

WATCHDOG = 10
#: Every step of `DemoFlow`, pipeline by pipeline, in flow order.
STEP_IDS = [
    "orders",
    "parse",
    "key_by_customer",
    "running_total",
    "totals",
    "clicks",
    "enrich",
    "key_by_user",
    "clicks_per_minute",
    "windows",
]


def parse(order: Any) -> int:
    if order == "poison":
        raise ValueError("poison order: refused")
    return int(order)


def key_by_customer(order: int) -> tuple[str, int]:
    return f"customer-{order % 4}", order


def running_total(total: int, amount: int) -> tuple[int, int]:
    total += amount
    return total, total


def click_time(click: tuple[datetime, bool]) -> datetime:
    return click[0]


def count_click(count: int, click: Any) -> int:
    return count + 1


class DemoFlow:
    """The flow, its sources and sinks; build it on the loop that runs it."""

    def __init__(self, name: str = "shop") -> None:
        self.orders: PushSource[Any] = PushSource(max_buffer=64)
        self.clicks: PushSource[tuple[str, datetime, bool]] = PushSource(max_buffer=64)
        self.gate = anyio.Event()
        self.totals: list[Any] = []
        self.windows: list[Any] = []
        self.late = 0
        # Windows a minute long, on the clicks' own times, starting now.
        self.t0 = datetime.now(UTC).replace(second=0, microsecond=0)
        self.handle: aiowax.FlowHandle | None = None

        flow = Dataflow(name=name)
        flow.input("orders", self.orders)
        flow.map("parse", parse)
        flow.map("key_by_customer", key_by_customer)
        flow.stateful_map("running_total", lambda: 0, running_total)
        flow.output("totals", TestingSink(self.totals))

        flow.input("clicks", self.clicks)
        flow.map("enrich", self.enrich)
        flow.map("key_by_user", lambda click: (click[0], (click[1], click[2])))
        clock = EventClockConfig(click_time, timedelta(seconds=5), on_late=self._on_late)
        window = TumblingWindow(timedelta(minutes=1), align_to=self.t0)
        flow.fold_window("clicks_per_minute", clock, window, lambda: 0, count_click)
        flow.output("windows", TestingSink(self.windows))
        self.flow = flow

    def _on_late(self, key: str, value: Any, time: datetime, watermark: datetime) -> None:
        self.late += 1

    async def enrich(self, click: tuple[str, datetime, bool]) -> tuple[str, datetime, bool]:
        if click[2]:
            await self.gate.wait()
        return click

    def click(self, user: str, seconds: float, *, jam: bool = False) -> tuple[str, datetime, bool]:
        return user, self.t0 + timedelta(seconds=seconds), jam

    async def send_orders(self, orders: list[Any]) -> None:
        await self.orders.send_many(orders)

    async def send_clicks(self, clicks: list[tuple[str, datetime, bool]]) -> None:
        await self.clicks.send_many(clicks)

    def stats_of(self, step_id: str) -> Any:
        assert self.handle is not None
        return self.handle.stats().step(step_id)

    async def until(self, step_id: str, field: str, value: int) -> None:
        """Wait until a step's summed ``field`` reaches ``value``."""
        with anyio.fail_after(WATCHDOG):
            while getattr(self.stats_of(step_id), field) < value:
                await anyio.sleep(0.005)

    async def jam(self) -> None:
        """Send clicks that wait at ``enrich`` until its input channel is full.

        One click at a time, each once the last was read: so each is a batch
        of its own, and each batch takes a place in the channel.
        """
        with anyio.fail_after(WATCHDOG):
            while True:
                enrich = self.stats_of("enrich")
                if enrich.capacity and enrich.queued >= enrich.capacity:
                    return
                if self.clicks.qsize() == 0:
                    self.clicks.send_nowait(self.click("jammer", 30, jam=True))
                await anyio.sleep(0.002)


class HotKeyFlow:
    """Two workers, one key: the worker that owns it is jammed, the other idle.

    Every item gets the key ``"hot"``, and ``count`` waits at ``gate`` for
    each, so the channel into ``count`` on the key's worker fills up while
    the other worker's stays empty. Build it on the loop that runs it.
    """

    workers = 2

    def __init__(self) -> None:
        self.items: PushSource[int] = PushSource(max_buffer=64)
        self.gate = anyio.Event()
        self.out: list[Any] = []
        self.handle: aiowax.FlowHandle | None = None
        self.hot_worker: int | None = None
        flow = Dataflow(name="hot")
        flow.input("items", self.items)
        flow.map("key", lambda item: ("hot", item))
        flow.stateful_map("count", lambda: 0, self.count)
        flow.output("out", TestingSink(self.out))
        self.flow = flow

    async def count(self, seen: int, item: int) -> tuple[int, int]:
        await self.gate.wait()
        return seen + 1, seen + 1

    async def jam(self) -> None:
        """Send items one at a time until a worker's channel into ``count`` is full."""
        assert self.handle is not None
        with anyio.fail_after(WATCHDOG):
            while True:
                rows = [r for r in self.handle.stats().steps if r.step_id == "count"]
                full = [r.worker_index for r in rows if r.capacity and r.queued >= r.capacity]
                if full:
                    self.hot_worker = full[0]
                    return
                if self.items.qsize() == 0:
                    self.items.send_nowait(1)
                await anyio.sleep(0.002)


@asynccontextmanager
async def running(demo: DemoFlow | HotKeyFlow) -> AsyncIterator[aiowax.FlowHandle]:
    """Run ``demo``'s flow (its failure stays on the handle); abort it at the end."""
    workers = demo.workers if isinstance(demo, HotKeyFlow) else 1
    async with anyio.create_task_group() as tg:
        demo.handle = await aiowax.start_flow(tg, demo.flow, workers=workers, propagate=False)
        try:
            yield demo.handle
        finally:
            await demo.handle.abort()


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port; yield its base URL.

    The socket listens before uvicorn starts, so a client may connect at
    once: the kernel holds the connection until uvicorn accepts it.
    """
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_level="warning",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(server.serve, sockets=[sock]))
        try:
            yield f"http://127.0.0.1:{port}/"
        finally:
            server.should_exit = True
