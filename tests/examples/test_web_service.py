"""The example web service, end to end: a real uvicorn server on loopback.

Every test serves the app from ``examples/web_service.py`` with uvicorn in a
task of the test, talks to it with httpx, and reads results from the live
Server-Sent Events stream. Windows are short (0.3 s); readings carry explicit
times in the past, so each sensor's window closes a known time after its
first reading: the tests wait on the stream for it, never on a fixed sleep.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import uvicorn

import aiowax

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "web_service.py"


def _load_example() -> Any:
    spec = importlib.util.spec_from_file_location("aiowax_example_web_service", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


web_service = _load_example()

WINDOW = timedelta(seconds=0.3)
#: A window start (2024 is a whole number of windows after the Unix epoch).
T0 = datetime(2024, 1, 1, tzinfo=UTC)
WATCHDOG = 5


def at(ms: int) -> str:
    """An ISO-8601 time ``ms`` milliseconds into the window that starts at T0."""
    return (T0 + timedelta(milliseconds=ms)).isoformat()


@dataclass
class Live:
    server: uvicorn.Server
    client: httpx.AsyncClient
    finished: anyio.Event

    async def shutdown(self) -> None:
        """Shut the server down as a signal would, and wait until it has."""
        self.server.should_exit = True
        await self.finished.wait()


@asynccontextmanager
async def serving(app: Any, *, draining: bool = False) -> AsyncIterator[Live]:
    """Serve ``app`` with uvicorn on a free loopback port, with a client for it."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level="warning", lifespan="on", log_config=None
    )
    if draining:
        server: uvicorn.Server = web_service.DrainingServer(config, app.state.service.drain)
    else:
        server = uvicorn.Server(config)
    finished = anyio.Event()

    async def serve() -> None:
        try:
            await server.serve()
        finally:
            finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        try:
            with anyio.fail_after(WATCHDOG):
                while not server.started:  # uvicorn has no event for it
                    await anyio.sleep(0.005)
            port = server.servers[0].sockets[0].getsockname()[1]
            async with httpx.AsyncClient(
                base_url=f"http://127.0.0.1:{port}", timeout=WATCHDOG
            ) as client:
                yield Live(server, client, finished)
        finally:
            server.should_exit = True


class Stream:
    """The ``data:`` events of an SSE response, one JSON object each."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self._lines = lines

    async def next(self) -> dict[str, Any] | None:
        """The next result, or None when the server ended the stream."""
        event = "message"
        async for line in self._lines:
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data: dict[str, Any] = json.loads(line.removeprefix("data:"))
                assert event == "message", (event, data)
                return data
        return None

    async def last_event(self) -> tuple[str, dict[str, Any]] | None:
        """The event (name, data) the server ended the stream with, if any."""
        event, last = "message", None
        async for line in self._lines:
            if line.startswith("event:"):
                event = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                last = (event, json.loads(line.removeprefix("data:")))
                event = "message"
        return last

    async def take(self, n: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for _ in range(n):
            result = await self.next()
            assert result is not None, f"the stream ended after {out}"
            out.append(result)
        return out


@asynccontextmanager
async def subscribed(client: httpx.AsyncClient) -> AsyncIterator[Stream]:
    """An open ``GET /stream``: once this is entered the server has subscribed us."""
    async with client.stream("GET", "/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async with aclosing(response.aiter_lines()) as lines:  # type: ignore[type-var]
            yield Stream(lines)


async def post(
    client: httpx.AsyncClient, sensor: str, value: float, time: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"sensor": sensor, "value": value}
    if time is not None:
        body["time"] = time
    return await client.post("/events", json=body)


async def post_all(client: httpx.AsyncClient, sensor: str, values: list[float]) -> None:
    """Post readings 10 ms apart in event time, all in the window starting at T0."""
    for i, value in enumerate(values):
        response = await post(client, sensor, value, at(10 * i))
        assert response.status_code == 202, response.text


async def health(client: httpx.AsyncClient) -> dict[str, Any]:
    return (await client.get("/health")).json()  # type: ignore[no-any-return]


async def until_health(client: httpx.AsyncClient, key: str, value: object) -> dict[str, Any]:
    """Poll ``/health`` until ``key`` has ``value`` (the caller's watchdog bounds it)."""
    while True:
        state = await health(client)
        if state[key] == value:
            return state
        await anyio.sleep(0.01)


def expected(
    sensor: str, values: list[float], start: datetime = T0, length: timedelta = WINDOW
) -> dict[str, Any]:
    return {
        "sensor": sensor,
        "window_start": start.isoformat(),
        "window_end": (start + length).isoformat(),
        "count": len(values),
        "sum": sum(values),
        "min": min(values),
        "max": max(values),
        "mean": sum(values) / len(values),
    }


@pytest.mark.asyncio
async def test_window_results_stream_out_when_windows_close() -> None:
    app = web_service.create_app(window=WINDOW)
    with anyio.fail_after(WATCHDOG):
        async with serving(app) as live, subscribed(live.client) as stream:
            state = await health(live.client)
            assert state["flow"] == "running"
            assert state["subscribers"] == 1
            await post_all(live.client, "a", [1, 2, 6])
            await post_all(live.client, "b", [10.5, 20.5])
            # No more input: the windows close on their timers.
            results = await stream.take(2)
            state = await health(live.client)
    assert sorted(results, key=lambda r: r["sensor"]) == [
        expected("a", [1, 2, 6]),
        expected("b", [10.5, 20.5]),
    ]
    assert state["accepted"] == 5
    assert state["late"] == 0


@pytest.mark.asyncio
async def test_readings_without_time_use_arrival_time() -> None:
    # With no lateness, a reading stamped on arrival at a window's very end
    # could be late if it took longer through the flow than the one before
    # (the example's module docstring): its command line waits 0.5 s too.
    app = web_service.create_app(window=WINDOW, lateness=timedelta(seconds=0.5))
    values = [3.0, 1.0, 4.0, 1.5, 5.0]
    before = datetime.now(UTC)
    with anyio.fail_after(WATCHDOG):
        async with serving(app) as live, subscribed(live.client) as stream:
            for value in values:
                response = await post(live.client, "c", value)
                assert response.status_code == 202, response.text
                stamped = datetime.fromisoformat(response.json()["time"])
                assert before <= stamped <= datetime.now(UTC)
            # The readings may straddle a window boundary: read until all are in.
            results: list[dict[str, Any]] = []
            while sum(r["count"] for r in results) < len(values):
                results.extend(await stream.take(1))
    assert sum(r["count"] for r in results) == len(values)
    assert sum(r["sum"] for r in results) == sum(values)
    assert min(r["min"] for r in results) == 1.0
    assert max(r["max"] for r in results) == 5.0
    starts = [datetime.fromisoformat(r["window_start"]) for r in results]
    assert len(set(starts)) == len(starts)
    for result, start in zip(results, starts, strict=True):
        assert result["sensor"] == "c"
        assert datetime.fromisoformat(result["window_end"]) - start == WINDOW
        assert before - WINDOW <= start <= datetime.now(UTC)
        assert result["mean"] == pytest.approx(result["sum"] / result["count"])


@pytest.mark.asyncio
async def test_shutdown_flushes_open_windows_onto_the_stream() -> None:
    # One-minute windows are still open when the server shuts down: the
    # draining server flushes them to the SSE client, then ends the stream.
    results: list[dict[str, Any]] = []
    minute = timedelta(minutes=1)
    app = web_service.create_app(window=minute, results=results)
    with anyio.fail_after(WATCHDOG):
        async with serving(app, draining=True) as live, subscribed(live.client) as stream:
            for sensor, value, time in [
                ("a", 1, at(0)),
                ("a", 2, at(20_000)),
                ("b", 5, at(30_000)),
                ("a", 4, (T0 + minute + WINDOW).isoformat()),
            ]:
                response = await post(live.client, sensor, value, time)
                assert response.status_code == 202, response.text
            live.server.should_exit = True
            flushed = await stream.take(3)
            assert await stream.next() is None  # then the stream ends cleanly
            await live.finished.wait()
    assert sorted(flushed, key=lambda r: (r["sensor"], r["window_start"])) == [
        expected("a", [1, 2], T0, minute),
        expected("a", [4], T0 + minute, minute),
        expected("b", [5], T0, minute),
    ]
    assert sorted(results, key=repr) == sorted(flushed, key=repr)
    assert app.state.service.handle.status is aiowax.FlowStatus.FINISHED


@pytest.mark.asyncio
async def test_plain_uvicorn_shutdown_counts_every_accepted_reading_once() -> None:
    # Under a plain uvicorn server the lifespan shutdown drains the flow:
    # readings still buffered and windows still open all reach the sinks.
    results: list[dict[str, Any]] = []
    app = web_service.create_app(window=timedelta(minutes=1), results=results)
    codes: list[int] = []

    async def post_one(i: int) -> None:
        response = await post(live.client, f"s{i % 3}", float(i))
        codes.append(response.status_code)

    with anyio.fail_after(WATCHDOG):
        async with serving(app) as live:
            async with anyio.create_task_group() as tg:  # concurrent requests
                for i in range(60):
                    tg.start_soon(post_one, i)
            await live.shutdown()
    assert codes == [202] * 60
    service = app.state.service
    assert service.handle.status is aiowax.FlowStatus.FINISHED
    assert service.accepted == 60
    assert service.late == 0
    for k in range(3):
        mine = [r for r in results if r["sensor"] == f"s{k}"]
        assert sum(r["count"] for r in mine) == 20
        assert sum(r["sum"] for r in mine) == sum(float(i) for i in range(k, 60, 3))


@pytest.mark.asyncio
async def test_full_flow_answers_429_then_recovers() -> None:
    gate = anyio.Event()

    async def enrich(event: Any) -> Any:  # a lookup that hangs until released
        await gate.wait()
        return event

    # One window of a minute, and every reading at its start: none can be
    # late, however long the run's hops take. (Stamped on arrival, with no
    # lateness, a reading could miss its window: one that waited in the
    # gate moves the sensor's watermark on with the clock from when it is
    # seen, and the next, stamped later, may be seen later still.)
    results: list[dict[str, Any]] = []
    app = web_service.create_app(
        window=timedelta(minutes=1), max_buffer=2, enrich=enrich, results=results
    )
    with anyio.fail_after(WATCHDOG):
        async with serving(app) as live:
            accepted = 0
            for _ in range(500):
                response = await post(live.client, "a", 1.0, at(0))
                if response.status_code != 202:
                    break
                accepted += 1
            else:
                pytest.fail("the flow never filled up")
            assert response.status_code == 429, response.text
            assert response.headers["retry-after"] == "1"
            state = await health(live.client)
            assert state["buffered"] == state["max_buffer"] == 2
            assert (state["accepted"], state["rejected"]) == (accepted, 1)
            assert state["flow"] == "running"

            gate.set()  # the flow catches up, and readings are accepted again
            await until_health(live.client, "buffered", 0)
            response = await post(live.client, "a", 1.0, at(0))
            assert response.status_code == 202, response.text
            accepted += 1
            await live.shutdown()  # the window still open is flushed
    assert app.state.service.late == 0
    assert [(r["count"], r["sum"]) for r in results] == [(accepted, accepted * 1.0)]


BAD_BODIES: list[tuple[bytes, str]] = [
    (b"not json", "JSON object"),
    (b"", "JSON object"),
    (b"[1, 2]", "JSON object"),
    (b'{"value": 1}', '"sensor"'),
    (b'{"sensor": "", "value": 1}', '"sensor"'),
    (b'{"sensor": 5, "value": 1}', '"sensor"'),
    (b'{"sensor": "a"}', '"value"'),
    (b'{"sensor": "a", "value": "1"}', '"value"'),
    (b'{"sensor": "a", "value": true}', '"value"'),
    (b'{"sensor": "a", "value": NaN}', "finite"),
    (b'{"sensor": "a", "value": 1e999}', "finite"),
    (b'{"sensor": "a", "value": 1, "time": "yesterday"}', '"time"'),
    (b'{"sensor": "a", "value": 1, "time": "2024-01-01T00:00:00"}', "UTC offset"),
    (b'{"sensor": "a", "value": 1, "time": 1700000000}', '"time"'),
    (b'{"sensor": "a", "value": 1, "unit": "C"}', "unknown field"),
]


@pytest.mark.asyncio
async def test_bad_readings_are_422_and_never_reach_the_flow() -> None:
    app = web_service.create_app(window=WINDOW)
    with anyio.fail_after(WATCHDOG):
        async with serving(app) as live:
            for body, message in BAD_BODIES:
                response = await live.client.post(
                    "/events", content=body, headers={"content-type": "application/json"}
                )
                assert response.status_code == 422, body
                assert message in response.json()["error"], (body, response.text)
            response = await post(live.client, "a", 1, "2024-01-01T00:00:00Z")
            assert response.status_code == 202  # "Z" is a UTC offset too
            state = await health(live.client)
    assert state["accepted"] == 1


@pytest.mark.asyncio
async def test_a_client_that_leaves_is_unsubscribed_and_others_keep_receiving() -> None:
    app = web_service.create_app(window=WINDOW)
    with anyio.fail_after(WATCHDOG):
        async with serving(app) as live, subscribed(live.client) as stays:
            async with subscribed(live.client) as leaves:
                assert (await health(live.client))["subscribers"] == 2
                await post_all(live.client, "a", [1, 2])
                assert await leaves.take(1) == [expected("a", [1, 2])]
            # The server notices the closed connection and unsubscribes it.
            await until_health(live.client, "subscribers", 1)
            await post_all(live.client, "b", [7])
            received = await stays.take(2)
    assert received == [expected("a", [1, 2]), expected("b", [7])]


def fail_on_boom(event: Any) -> Any:
    """An ``enrich`` that fails the flow on a reading of sensor "boom"."""
    if event.sensor == "boom":
        raise RuntimeError("lookup failed")
    return event


@pytest.mark.asyncio
async def test_a_failed_flow_is_reported_and_refuses_readings() -> None:
    app = web_service.create_app(window=WINDOW, enrich=fail_on_boom)
    with anyio.fail_after(WATCHDOG):
        async with serving(app) as live:
            response = await post(live.client, "boom", 1)
            assert response.status_code == 202  # the flow fails after accepting it
            state = await until_health(live.client, "flow", "failed")
            assert "lookup failed" in state["error"]
            assert (await live.client.get("/health")).status_code == 503
            response = await post(live.client, "a", 1)
            assert response.status_code == 503
            assert "failed" in response.json()["error"]
            assert (await live.client.get("/stream")).status_code == 503


@pytest.mark.asyncio
async def test_a_stream_open_when_the_flow_fails_ends_with_the_error() -> None:
    app = web_service.create_app(window=WINDOW, enrich=fail_on_boom)
    with anyio.fail_after(WATCHDOG):
        async with serving(app) as live, subscribed(live.client) as stream:
            response = await post(live.client, "boom", 1)
            assert response.status_code == 202
            ended = await stream.last_event()
    # Not a clean end, as if the flow had finished: the client is told.
    assert ended is not None
    name, data = ended
    assert name == "failed"
    assert "RuntimeError: lookup failed" in data["error"]


def test_command_line_waits_half_a_second_for_late_readings() -> None:
    # Readings stamped on arrival can reach a window after a slower hop
    # than the one before (see the example's docstring); create_app waits
    # only when told, the command line half a second unless told otherwise.
    def wait_of(argv: list[str]) -> timedelta:
        app = web_service.app_from_args(web_service.parse_args(argv))
        (stats,) = [step for step in app.state.service.flow.steps if step.step_id == "stats"]
        return stats.clock_config.wait_for_system_duration  # type: ignore[no-any-return]

    assert wait_of([]) == timedelta(seconds=0.5)
    assert wait_of(["--lateness", "2"]) == timedelta(seconds=2)
    bare = web_service.create_app()
    (stats,) = [step for step in bare.state.service.flow.steps if step.step_id == "stats"]
    assert stats.clock_config.wait_for_system_duration == timedelta(0)
