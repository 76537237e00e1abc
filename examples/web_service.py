"""Per-sensor window statistics as a web service: POST readings, stream results.

Needs the ``web`` extra (Starlette and uvicorn)::

    pip install '.[web]'     # in the aiowax checkout
    python examples/web_service.py                # http://127.0.0.1:8000, 5 s windows
    python examples/web_service.py --window 2     # 2 s windows

Watch the results in one terminal (``-N``: print them as they come)::

    curl -N http://127.0.0.1:8000/stream

and post readings from another. ``time`` is optional (ISO-8601 with a UTC
offset); without it the server stamps the arrival time::

    curl -X POST http://127.0.0.1:8000/events -H 'content-type: application/json' \\
        -d '{"sensor": "kitchen", "value": 21.5}'
    curl -X POST http://127.0.0.1:8000/events -H 'content-type: application/json' \\
        -d "{\\"sensor\\": \\"hall\\", \\"value\\": 19, \\"time\\": \\"$(date -u +%FT%T+00:00)\\"}"
    curl http://127.0.0.1:8000/health

and open http://127.0.0.1:8000/live/ in a browser to watch the flow run.

When a window closes (on time, whether or not more readings come), each
sensor that had readings in it gets one Server-Sent Event::

    data: {"sensor":"kitchen","window_start":"...","window_end":"...","count":1,
           "sum":21.5,"min":21.5,"max":21.5,"mean":21.5}

How it works:

- ``POST /events`` validates the body (422 when it is wrong) and hands the
  reading to the flow with `PushSource.send_nowait`. The source is bounded:
  when the flow is behind and its buffer is full, the answer is 429 with
  ``Retry-After`` instead of an ever-growing queue. 503 once the service is
  shutting down (or its flow failed).
- The flow keys readings by sensor and folds them into tumbling windows on
  the readings' own time (`EventClockConfig`), so a window's result comes out
  when the window closes. Readings older than a window that already closed
  are late: dropped, and counted in ``/health``. A sensor's watermark moves
  on with the clock from when its newest reading was seen, so even a reading
  stamped on arrival can miss a window that ends just after its stamp, if
  it takes longer through the flow than the one before. The command line
  therefore waits 0.5 s (``--lateness``) by default; `create_app` waits
  none unless told.
- ``GET /stream`` subscribes the client to a `BroadcastSink`. Each client has
  its own bounded buffer; one that falls further behind gets an
  ``event: overflow`` and is disconnected, so a slow reader never slows down
  the flow or the other readers. A client that goes away is unsubscribed.
  If the flow fails, each stream ends with an ``event: failed`` naming the
  error.
- ``GET /health`` reports the flow's status (200 while it runs, else 503).
- ``/live/`` is the flow's live page (`aiowax.asgi.live_app`): per-step
  counts and rates, queue fill, keys, windows, late readings, the error if
  any; ``/live/stats``, ``/live/dataflow``, ``/live/readyz`` (and
  ``/live/metrics`` with ``aiowax[prometheus]``) are its JSON and probes.
- The flow runs in the app's lifespan. On shutdown the source is closed: the
  readings already accepted still go through, the open windows are flushed
  to the sinks, and the sinks close, which ends the SSE streams. Nothing that
  was answered with 202 is lost.

One thing about uvicorn: it runs the lifespan shutdown only once every open
response has finished, and an SSE response never finishes on its own. So
``python examples/web_service.py`` serves with `DrainingServer`, which drains
the flow *before* uvicorn waits for the responses: SSE clients receive the
last windows, then their streams end. Under a plain ``uvicorn.Server`` (or
``uvicorn examples.web_service:app``), set ``timeout_graceful_shutdown``:
the streams are then cut after it, and the lifespan still drains the flow
(pass ``results=[]`` to `create_app` to see what it flushed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import anyio
import uvicorn
from anyio.abc import TaskGroup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

import aiowax
from aiowax.asgi import live_app
from aiowax.cluster import KafkaCluster
from aiowax.connectors.inproc import (
    BroadcastSink,
    FlowFailedError,
    PushSource,
    SourceClosedError,
    SourceFullError,
    SubscriberOverflowError,
    Subscription,
)
from aiowax.dataflow import Dataflow
from aiowax.window import EventClockConfig, TumblingWindow, WindowMetadata

logger = logging.getLogger("aiowax.examples.web_service")

DEFAULT_WINDOW = timedelta(seconds=5)
#: Windows start at whole multiples of their length since the Unix epoch.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NO_LATENESS = timedelta(0)
MAX_SENSOR_LENGTH = 200
FIELDS = frozenset({"sensor", "value", "time"})
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


# -- the data -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One reading of one sensor."""

    sensor: str
    value: float
    time: datetime  # timezone-aware, UTC


def parse_event(payload: object, now: datetime) -> Event:
    """Validate a decoded JSON body; `ValueError` says what is wrong with it."""
    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(payload) - FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)}")
    sensor = payload.get("sensor")
    if not isinstance(sensor, str) or not sensor.strip():
        raise ValueError('"sensor" must be a non-empty string')
    if len(sensor) > MAX_SENSOR_LENGTH:
        raise ValueError(f'"sensor" must be at most {MAX_SENSOR_LENGTH} characters')
    value = payload.get("value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError('"value" must be a number')
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError('"value" must be a finite number')
    raw = payload.get("time")
    if raw is None:
        time = now
    else:
        if not isinstance(raw, str):
            raise ValueError('"time" must be an ISO-8601 string')
        try:
            time = datetime.fromisoformat(raw)
        except ValueError:
            raise ValueError(f'"time" is not an ISO-8601 datetime: {raw!r}') from None
        if time.utcoffset() is None:
            raise ValueError(
                '"time" needs a UTC offset, e.g. "2024-05-01T12:00:00+00:00" or "...Z"'
            )
    return Event(sensor, number, time.astimezone(UTC))


@dataclass(frozen=True, slots=True)
class Stats:
    """Running statistics of one sensor in one window."""

    count: int = 0
    total: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf

    def add(self, event: Event) -> Stats:
        value = event.value
        return Stats(
            self.count + 1,
            self.total + value,
            min(self.minimum, value),
            max(self.maximum, value),
        )


def to_result(item: tuple[str, tuple[WindowMetadata, Stats]]) -> dict[str, Any]:
    """What clients get for one sensor and window (JSON-ready)."""
    sensor, (meta, stats) = item
    return {
        "sensor": sensor,
        "window_start": meta.open_time.isoformat(),
        "window_end": meta.close_time.isoformat(),
        "count": stats.count,
        "sum": stats.total,
        "min": stats.minimum,
        "max": stats.maximum,
        "mean": stats.total / stats.count,
    }


def event_time(event: Event) -> datetime:
    return event.time


# -- the flow and its life ----------------------------------------------------------


class SensorWindows:
    """The flow behind the app, and what the request handlers need of it."""

    def __init__(
        self,
        *,
        window: timedelta,
        align_to: datetime,
        lateness: timedelta,
        max_buffer: int,
        sse_buffer: int,
        heartbeat: float,
        enrich: Callable[[Event], Event | Awaitable[Event]] | None,
        results: list[dict[str, Any]] | None,
        drain_timeout: float,
        cluster: KafkaCluster | None,
    ) -> None:
        self.window = window
        self.cluster = cluster
        self.heartbeat = heartbeat
        self.drain_timeout = drain_timeout
        self.source: PushSource[Event] = PushSource(max_buffer=max_buffer)
        self.sink: BroadcastSink[dict[str, Any]] = BroadcastSink(
            buffer=sse_buffer, overflow="disconnect"
        )
        self.handle: aiowax.FlowHandle | None = None
        self.accepted = 0  # readings answered with 202
        self.rejected = 0  # readings answered with 429
        self.late = 0  # readings the flow dropped as late

        flow = Dataflow()
        flow.input("readings", self.source)
        if enrich is not None:
            flow.map("enrich", enrich)
        flow.map("key_by_sensor", lambda event: (event.sensor, event))
        clock = EventClockConfig(event_time, wait_for_system_duration=lateness, on_late=self._late)
        flow.fold_window(
            "stats", clock, TumblingWindow(window, align_to=align_to), Stats, Stats.add
        )
        flow.map("to_json", to_result)
        if results is not None:
            flow.inspect(results.append)
        flow.output("stream", self.sink)
        self.flow = flow

    def _late(self, sensor: str, event: Event, time: datetime, watermark: datetime) -> None:
        self.late += 1
        logger.info("late reading of %r at %s dropped (watermark %s)", sensor, time, watermark)

    @property
    def status(self) -> str:
        """The flow's status, or "draining" while the shutdown finishes it."""
        if self.handle is None:
            return "starting"
        status = self.handle.status.value
        return "draining" if status == "running" and self.source.closed else status

    @property
    def running(self) -> bool:
        return self.status == "running"

    async def start(self, task_group: TaskGroup) -> None:
        """Start the flow in ``task_group``; its failure is reported, not raised."""
        self.handle = await aiowax.start_flow(
            task_group, self.flow, propagate=False, cluster=self.cluster
        )
        task_group.start_soon(self._report_failure, self.handle)

    @staticmethod
    async def _report_failure(handle: aiowax.FlowHandle) -> None:
        with contextlib.suppress(Exception):
            await handle.wait()
        if handle.error is not None:
            logger.error("the flow failed", exc_info=handle.error)

    async def drain(self) -> None:
        """Finish gracefully: accept nothing more, flush everything, close the sinks.

        Closing the source ends the flow's input once the buffered readings
        are read, so every accepted reading is counted and every open window
        flushed; then the sink closes and the SSE streams end. Idempotent.
        (A graceful `FlowHandle.stop` would end the flow the same way: it too
        hands the flow every reading the PushSource accepted, and flushes the
        open windows, as this flow runs without recovery. Closing the source
        is all it takes here: the input ends, and the flow finishes.)
        """
        self.source.close()
        handle = self.handle
        if handle is None:
            return
        if self.cluster is not None:
            # A copy of a cluster never runs out of input (the repartition
            # topic carries the other replicas' readings too): stop it. The
            # accepted readings still reach the topic, and the open windows
            # go to the changelog, for the replica that takes their sensors.
            with contextlib.suppress(Exception):
                await handle.stop(timeout=self.drain_timeout)
            return
        with anyio.move_on_after(self.drain_timeout), contextlib.suppress(Exception):
            await handle.wait()
        if not handle.done:
            logger.warning("the flow did not finish within %s s; aborting it", self.drain_timeout)
            await handle.abort()


# -- HTTP ---------------------------------------------------------------------------


def _error(status: int, message: str, retry_after: int | None = None) -> JSONResponse:
    headers = None if retry_after is None else {"Retry-After": str(retry_after)}
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def post_event(request: Request) -> Response:
    service: SensorWindows = request.app.state.service
    try:
        payload = json.loads(await request.body())
    except (ValueError, RecursionError):
        return _error(422, "the body must be a JSON object")
    try:
        event = parse_event(payload, datetime.now(UTC))
    except ValueError as error:
        return _error(422, str(error))
    try:
        service.source.send_nowait(event)
    except SourceFullError:
        service.rejected += 1
        return _error(429, "the flow is behind: retry later", retry_after=1)
    except SourceClosedError:
        return _error(503, f"not accepting readings (the flow is {service.status})", retry_after=1)
    service.accepted += 1
    return JSONResponse(
        {"accepted": True, "sensor": event.sensor, "time": event.time.isoformat()},
        status_code=202,
    )


async def health(request: Request) -> Response:
    service: SensorWindows = request.app.state.service
    body: dict[str, Any] = {
        "flow": service.status,
        "accepting": service.running,
        "buffered": service.source.qsize(),
        "max_buffer": service.source.max_buffer,
        "accepted": service.accepted,
        "rejected": service.rejected,
        "late": service.late,
        "subscribers": service.sink.subscriber_count,
        "window_seconds": service.window.total_seconds(),
    }
    if service.handle is not None and service.handle.error is not None:
        body["error"] = repr(service.handle.error)
    return JSONResponse(body, status_code=200 if service.running else 503)


async def stream(request: Request) -> Response:
    service: SensorWindows = request.app.state.service
    if not service.running:
        return _error(503, f"no results to stream (the flow is {service.status})")
    return EventStream(service.sink.subscribe(), service.heartbeat)


Next = tuple[Literal["result", "idle", "end", "overflow", "failed"], Any]


async def _next_result(subscription: Subscription[dict[str, Any]], timeout: float) -> Next:
    # A subscription is safe to cancel while it waits: nothing is lost.
    with anyio.move_on_after(timeout):
        try:
            return "result", await anext(subscription)
        except StopAsyncIteration:
            return "end", None
        except SubscriberOverflowError as error:
            return "overflow", error
        except FlowFailedError as error:
            return "failed", error
    return "idle", None


class EventStream(StreamingResponse):
    """One SSE client: its subscription, closed whichever way the response ends."""

    def __init__(self, subscription: Subscription[dict[str, Any]], heartbeat: float) -> None:
        self.subscription = subscription
        self._events = self._generate(heartbeat)
        super().__init__(self._events, media_type="text/event-stream", headers=SSE_HEADERS)

    async def _generate(self, heartbeat: float) -> AsyncGenerator[str, None]:
        yield ": subscribed\n\n"  # a comment: the stream is live
        while True:
            kind, value = await _next_result(self.subscription, heartbeat)
            if kind == "result":
                yield f"data: {json.dumps(value, separators=(',', ':'))}\n\n"
            elif kind == "idle":
                yield ": keep-alive\n\n"  # also finds out about dead clients
            elif kind in ("overflow", "failed"):
                # A reader told to go, or a flow that failed: the client
                # learns why the stream ends, rather than a clean end.
                yield f"event: {kind}\ndata: {json.dumps({'error': str(value)})}\n\n"
                return
            else:
                return  # the flow ended: so does the stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # The client may have gone away (Starlette then cancels the
            # response): unsubscribe now rather than when the GC gets to it.
            self.subscription.close()
            with anyio.CancelScope(shield=True):
                await self._events.aclose()


def create_app(
    window: timedelta = DEFAULT_WINDOW,
    *,
    align_to: datetime = EPOCH,
    lateness: timedelta = NO_LATENESS,
    max_buffer: int = 1024,
    sse_buffer: int = 256,
    heartbeat: float = 15.0,
    enrich: Callable[[Event], Event | Awaitable[Event]] | None = None,
    results: list[dict[str, Any]] | None = None,
    drain_timeout: float = 10.0,
    cluster: KafkaCluster | None = None,
) -> Starlette:
    """Build the app (its flow starts with its lifespan).

    Args:
        window: Length of the tumbling windows.
        align_to: An instant where a window starts.
        lateness: How long a window waits for out-of-order readings after
            the newest reading of its sensor has passed its end.
        max_buffer: Readings accepted but not yet read by the flow, before
            ``POST /events`` answers 429.
        sse_buffer: Results a stream client may fall behind before it is
            disconnected.
        heartbeat: Seconds between keep-alive comments on idle streams.
        enrich: Optional ``enrich(event) -> event`` (may be ``async def``)
            run in the flow before the windows, e.g. a lookup. A slow one
            back-pressures ``POST /events``.
        results: If given, every result is also appended to it.
        drain_timeout: Longest the shutdown waits for the flow to finish
            before aborting it.
        cluster: Run the flow as one replica of a cluster (see
            ``docs/scale-out.md``): every replica takes readings, and each
            sensor's windows are computed by the one replica that owns its
            partition of the repartition topic; that replica's ``/stream``
            carries them.
    """
    service = SensorWindows(
        window=window,
        align_to=align_to,
        lateness=lateness,
        max_buffer=max_buffer,
        sse_buffer=sse_buffer,
        heartbeat=heartbeat,
        enrich=enrich,
        results=results,
        drain_timeout=drain_timeout,
        cluster=cluster,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            await service.start(tg)
            yield
            await service.drain()

    app = Starlette(
        routes=[
            Route("/events", post_event, methods=["POST"]),
            Route("/stream", stream, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
            # The handle exists once the lifespan has started the flow.
            Mount("/live", live_app(lambda: service.handle, flow=service.flow)),
        ],
        lifespan=lifespan,
    )
    app.state.service = service
    return app


class DrainingServer(uvicorn.Server):
    """A uvicorn server that drains the flow before it waits for open responses.

    Without it, uvicorn would wait for the SSE responses to end before the
    lifespan shutdown, and they end only when the flow does.
    """

    def __init__(self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]]) -> None:
        super().__init__(config)
        self._drain = drain

    async def shutdown(self, sockets: Any = None) -> None:
        await self._drain()
        await super().shutdown(sockets)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's options (``sys.argv`` without ``argv``)."""
    parser = argparse.ArgumentParser(description="Per-sensor window statistics over HTTP.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--window", type=float, default=5.0, help="window length in seconds")
    parser.add_argument(
        "--lateness",
        type=float,
        default=0.5,
        help="seconds a window waits for out-of-order readings (default 0.5: also for "
        "readings stamped on arrival that take longer through the flow than the one "
        "before; replicas of a cluster hand readings on through Kafka, so give them a "
        "second or more)",
    )
    parser.add_argument(
        "--kafka-cluster",
        default=os.environ.get("AIOWAX_KAFKA_CLUSTER"),
        metavar="HOST:PORT[,HOST:PORT...]",
        help="run as one replica of a cluster on these brokers (env AIOWAX_KAFKA_CLUSTER)",
    )
    parser.add_argument(
        "--app-id",
        default=os.environ.get("AIOWAX_APP_ID", "sensor-windows"),
        help="the cluster's name, the same on every replica (env AIOWAX_APP_ID)",
    )
    parser.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions of the cluster's internal topics (default 6)",
    )
    return parser.parse_args(argv)


def app_from_args(args: argparse.Namespace) -> Starlette:
    """The app the command line serves."""
    cluster = None
    if args.kafka_cluster:
        brokers = [b.strip() for b in args.kafka_cluster.split(",") if b.strip()]
        cluster = KafkaCluster(brokers=brokers, app_id=args.app_id, partitions=args.partitions)
    return create_app(
        timedelta(seconds=args.window), lateness=timedelta(seconds=args.lateness), cluster=cluster
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    app = app_from_args(args)
    config = uvicorn.Config(
        app, host=args.host, port=args.port, lifespan="on", timeout_graceful_shutdown=5
    )
    server = DrainingServer(config, app.state.service.drain)
    # uvicorn re-raises the Ctrl+C it handled, once it has shut down cleanly.
    with contextlib.suppress(KeyboardInterrupt):
        server.run()


if __name__ == "__main__":
    main()
