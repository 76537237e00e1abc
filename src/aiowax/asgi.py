"""A flow inside an ASGI service: the live page, health probes, a lifespan.

`live_app` is a plain ASGI app (no web framework needed) that serves the
live page of a running flow and what it reads:

    GET /          the live page: one self-contained HTML file
    GET /stats     FlowStats.to_dict() as JSON, with "now", "ready", "reason"
    GET /dataflow  the dataflow graph (aiowax.visualize.to_dict)
    GET /livez     200 while the process serves
    GET /readyz    200 while the flow runs (not starting, restoring, stopping
                   or ended); else 503 with the reason
    GET /metrics   Prometheus text, with 'aiowax[prometheus]' installed

Mount it anywhere: ``Mount("/live", live_app(handle))`` in Starlette,
``app.mount("/live", live_app(handle))`` in FastAPI. With Starlette or
FastAPI (the ``web`` extra), `flow_lifespan` runs a flow for as long as the
app serves and `flow_handle` hands it to endpoints:

    lifespan = flow_lifespan(flow, stop_timeout=20)
    app = FastAPI(lifespan=lifespan)
    app.mount("/live", live_app(lambda: getattr(app.state, "flow", None), flow=flow))

    @app.get("/count")
    def count(handle: FlowHandle = Depends(flow_handle)) -> dict[str, int]:
        return {"counted": handle.stats().step("count").items_out}

``python -m aiowax FLOW --http 127.0.0.1:3030`` serves `live_app` next to
a flow run from the command line. See ``docs/observability.md``.
"""

from __future__ import annotations

from aiowax._definition.flow import Dataflow
from aiowax._live.app import ASGIApp as _ASGIApp
from aiowax._live.app import HandleSource as _HandleSource
from aiowax._live.app import LiveApp as _LiveApp
from aiowax._live.lifespan import FlowHandleDependency as _FlowHandleDependency
from aiowax._live.lifespan import flow_lifespan
from aiowax._util import fixup_module_metadata

__all__ = ["flow_handle", "flow_lifespan", "live_app"]


def live_app(handle: _HandleSource, *, flow: Dataflow | None = None) -> _ASGIApp:
    """The live page of a flow, and its JSON endpoints, as an ASGI app.

    The page polls ``stats`` (a relative URL, so the app works mounted under
    any prefix) once a second and draws each pipeline as a column of step
    cards: items in and out and their rate, the input channel's fill (red
    when full: back-pressure), busy time, keys, watermark lag, late items,
    partitions and their lag; a header shows the status, epoch, snapshot
    age, uptime and the error, if any. Stats hold no items and no keys, so
    neither does the page; an error's message is shown as it was raised.

    Endpoints (GET or HEAD; other methods get 405, other paths 404, JSON
    answers ``Cache-Control: no-store``): ``/`` the page, ``/stats``,
    ``/dataflow``, ``/livez``, ``/readyz``, ``/metrics`` (see the module's
    docstring). ``/metrics`` renders an `aiowax.prometheus.StatsCollector`
    of the flow in a registry of its own (never the global one); without
    prometheus-client it answers 404 with the install hint.

    There is no authentication: serve it on loopback, or behind whatever
    guards the rest of the service.

    Args:
        handle: The flow's `aiowax.FlowHandle`, or a function returning it
            (``None`` until the flow has started), for apps whose routes
            exist before their lifespan starts the flow.
        flow: The `Dataflow`, for ``/dataflow`` (default: the handle's).

    Returns:
        An ASGI 3 application.

    Raises:
        TypeError: ``handle`` is neither a handle nor callable, or ``flow``
            is not a `Dataflow`.
    """
    return _LiveApp(handle, flow)


#: The running flow's handle, from ``request.app.state.flow``, where
#: `flow_lifespan` puts it. Call it in a Starlette endpoint
#: (``flow_handle(request)``), or let FastAPI do it:
#: ``handle: FlowHandle = Depends(flow_handle)``. Raises `RuntimeError` when
#: the app has no flow there. For another ``state_name``, read
#: ``request.app.state.<name>`` the same way.
flow_handle = _FlowHandleDependency()

fixup_module_metadata(__name__, ["flow_lifespan", "live_app"], globals())
