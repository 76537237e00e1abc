"""A flow inside a Starlette app: POST orders in, stream running totals out.

Needs the web extra (``pip install '.[web]'`` from a checkout); serve it with
``uvicorn web_app:app`` from this directory. FastAPI takes the same
``lifespan=``.
"""

import contextlib
import json

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import aiowax
from aiowax.connectors.inproc import (
    BroadcastSink,
    FlowFailedError,
    PushSource,
    SourceClosedError,
    SourceFullError,
)
from aiowax.dataflow import Dataflow


def add(total, amount):
    total += amount
    return total, total


def build_flow(orders: PushSource, totals: BroadcastSink) -> Dataflow:
    flow = Dataflow("orders")
    flow.input("orders", orders)
    flow.map("key", lambda order: (order["customer"], order["amount"]))
    flow.stateful_map("total", lambda: 0, add)
    flow.map("as_json", lambda kv: {"customer": kv[0], "total": kv[1]})
    flow.output("totals", totals)
    return flow


def create_app() -> Starlette:
    orders = PushSource(max_buffer=10_000)  # a full flow makes the handlers answer 429
    totals = BroadcastSink(buffer=1_000)  # each reader buffers up to 1,000 results

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        app.state.totals = totals
        async with aiowax.open_flow(build_flow(orders, totals)) as handle:
            app.state.flow = handle
            yield
            # Shutting down: end the input. The orders already accepted go
            # through, the sink closes, which ends every stream, and leaving
            # the `async with` waits for the flow to finish.
            orders.close()

    async def post_order(request: Request) -> Response:
        order = await request.json()
        try:
            orders.send_nowait(order)
        except SourceFullError:
            return JSONResponse({"error": "busy"}, status_code=429, headers={"Retry-After": "1"})
        except SourceClosedError:
            return JSONResponse({"error": "shutting down"}, status_code=503)
        return JSONResponse({"accepted": True}, status_code=202)

    async def stream(request: Request) -> Response:
        subscription = totals.subscribe()

        async def events():
            async with subscription:  # unsubscribes when the client goes
                try:
                    async for total in subscription:
                        yield f"data: {json.dumps(total)}\n\n"
                except FlowFailedError:
                    # The stream says the flow failed rather than end as if
                    # it had finished; /health has the error.
                    yield "event: failed\ndata: {}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def health(request: Request) -> Response:
        handle = request.app.state.flow
        running = handle.status is aiowax.FlowStatus.RUNNING
        body = {"flow": handle.status.value}
        if handle.error is not None:
            body["error"] = repr(handle.error)
        return JSONResponse(body, status_code=200 if running else 503)

    routes = [
        Route("/orders", post_order, methods=["POST"]),
        Route("/totals", stream),
        Route("/health", health),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


app = create_app()
