"""The live page's ASGI app: the page, its stats, the graph, the probes, metrics.

A plain ASGI 3 callable with no web framework under it, so it mounts in any
ASGI app (a Starlette ``Mount``, FastAPI's ``app.mount``) and uvicorn serves
it alone for ``python -m aiowax FLOW --http``. Every answer is computed from
`FlowHandle.stats` when asked: serving the page costs the flow nothing until
somebody looks, and then one stats snapshot per poll.
"""

from __future__ import annotations

import importlib
import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiowax._definition.flow import Dataflow
from aiowax._embed import FlowHandle
from aiowax._engine.driver import flow_name
from aiowax._graph import to_dict
from aiowax._stats.model import FlowStats
from aiowax._util import answer_lifespan, install_hint

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: What `live_app` reads: a handle, or a function returning the handle of
#: now (``None`` before the flow has started), for apps that build their
#: routes before their lifespan starts the flow.
HandleSource = FlowHandle | Callable[[], FlowHandle | None]

PROMETHEUS_HINT = install_hint("prometheus")
#: The modules ``/metrics`` needs; a missing one means "not installed".
_METRICS_MODULES = frozenset({"prometheus_client", "aiowax.prometheus"})

_JSON = "application/json"
_HTML = "text/html; charset=utf-8"
_ALLOWED = b"GET, HEAD"
# The page loads nothing from anywhere, and may only talk to its own server.
_PAGE_CSP = (
    b"default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    b"connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'"
)
_WHY_NOT_READY = {
    "starting": "the flow is starting",
    "stopping": "the flow is stopping",
    "finished": "the flow has finished",
    "failed": "the flow failed",
    "cancelled": "the flow was aborted",
}


def readiness(stats: FlowStats | None) -> tuple[bool, str]:
    """Whether a flow should get work now, and why (not).

    Ready only while it runs: not while it starts, restores its state
    (cluster mode), stops, or after it ended.
    """
    if stats is None:
        return False, "the flow has not started"
    if stats.status == "running":
        if stats.restoring:
            return False, "the flow is restoring its state"
        return True, "the flow is running"
    return False, _WHY_NOT_READY.get(stats.status, f"the flow is {stats.status}")


def _finite(value: Any) -> Any:
    # Browsers' JSON.parse refuses NaN and Infinity, which json.dumps writes.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _json(data: object) -> bytes:
    return json.dumps(_finite(data), separators=(",", ":")).encode()


def _route_path(scope: Scope) -> str:
    """The path below where the app is mounted.

    Starlette's ``Mount`` and servers run with a root path keep the full
    path in ``path`` and the mount point in ``root_path``.
    """
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        rest = path[len(root) :]
        if not rest or rest.startswith("/"):
            return rest
    return path


class LiveApp:
    """The ASGI app `live_app` returns (see there for the endpoints)."""

    def __init__(self, source: HandleSource, flow: Dataflow | None) -> None:
        if not isinstance(source, FlowHandle) and not callable(source):
            msg = (
                "live_app: expected a FlowHandle or a function returning one, "
                f"got {type(source).__name__}"
            )
            raise TypeError(msg)
        if flow is not None and not isinstance(flow, Dataflow):
            msg = f"live_app: flow must be a Dataflow, got {type(flow).__name__}"
            raise TypeError(msg)
        self._source = source
        self._flow = flow
        self._graph: bytes | None = None
        self._page: bytes | None = None
        # The metrics registry, built at the first /metrics; False once found
        # missing (installing a package does not reach a running process).
        self._registry: Any = None
        self._routes: dict[str, Callable[[], Awaitable[tuple[int, bytes, str]]]] = {
            "/": self._page_response,
            "/stats": self._stats_response,
            "/dataflow": self._dataflow_response,
            "/livez": self._livez_response,
            "/readyz": self._readyz_response,
            "/metrics": self._metrics_response,
        }

    # -- what is served ------------------------------------------------------

    def _handle(self) -> FlowHandle | None:
        if isinstance(self._source, FlowHandle):
            return self._source
        return self._source()

    def _known_flow(self, handle: FlowHandle | None) -> Dataflow | None:
        if self._flow is not None:
            return self._flow
        return None if handle is None else handle.flow

    def stats(self, handle: FlowHandle | None = None) -> FlowStats:
        """The flow's stats now (an empty ``starting`` snapshot before it started)."""
        handle = handle or self._handle()
        if handle is not None:
            return handle.stats()
        return FlowStats(name=flow_name(self._flow), status="starting")

    async def _page_response(self) -> tuple[int, bytes, str]:
        if self._page is None:
            self._page = resources.files("aiowax._live").joinpath("page.html").read_bytes()
        return 200, self._page, _HTML

    async def _stats_response(self) -> tuple[int, bytes, str]:
        handle = self._handle()
        stats = self.stats(handle)
        ready, reason = readiness(None if handle is None else stats)
        body = stats.to_dict()
        # The page reads ages against the server's clock, not the browser's.
        body["now"] = datetime.now(UTC).isoformat()
        body["ready"] = ready
        body["reason"] = reason
        return 200, _json(body), _JSON

    async def _dataflow_response(self) -> tuple[int, bytes, str]:
        if self._graph is None:
            flow = self._known_flow(self._handle())
            if flow is None:
                body = {"error": "the flow is not known until it starts (pass flow= to live_app)"}
                return 503, _json(body), _JSON
            # A Dataflow does not change once it runs: render it once.
            self._graph = _json(to_dict(flow))
        return 200, self._graph, _JSON

    async def _livez_response(self) -> tuple[int, bytes, str]:
        # Alive is "this process answers": a failed flow is a readiness matter.
        return 200, _json({"live": True}), _JSON

    async def _readyz_response(self) -> tuple[int, bytes, str]:
        handle = self._handle()
        stats = None if handle is None else handle.stats()
        ready, reason = readiness(stats)
        body: dict[str, Any] = {
            "ready": ready,
            "status": "not started" if stats is None else stats.status,
            "reason": reason,
        }
        if stats is not None and stats.error is not None:
            body["error"] = stats.error
        return (200 if ready else 503), _json(body), _JSON

    async def _metrics_response(self) -> tuple[int, bytes, str]:
        if self._registry is None:
            self._registry = self._make_registry()
        if self._registry is False:
            body = {
                "error": "metrics need prometheus-client and aiowax.prometheus",
                "hint": PROMETHEUS_HINT,
            }
            return 404, _json(body), _JSON
        prometheus_client = importlib.import_module("prometheus_client")
        output: bytes = prometheus_client.generate_latest(self._registry)
        content_type: str = prometheus_client.CONTENT_TYPE_LATEST
        return 200, output, content_type

    def _make_registry(self) -> Any:
        try:
            prometheus_client = importlib.import_module("prometheus_client")
            collectors = importlib.import_module("aiowax.prometheus")
        except ImportError as error:
            # Not installed; any other import error is a bug to show.
            if error.name in _METRICS_MODULES:
                return False
            raise
        # A registry of our own: the user's (or the global) one is theirs.
        registry = prometheus_client.CollectorRegistry()
        source = self._source if isinstance(self._source, FlowHandle) else self.stats
        registry.register(collectors.StatsCollector(source))
        return registry

    # -- ASGI ------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (HTTP; lifespan events are acknowledged)."""
        kind = scope["type"]
        if kind == "lifespan":
            await answer_lifespan(receive, send)
            return
        if kind != "http":
            # A websocket: refused (closing before accepting is a 403).
            await receive()
            await send({"type": "websocket.close", "code": 1008})
            return
        head = scope.get("method") == "HEAD"
        path = _route_path(scope)
        if path == "":
            # Mounted at /live and asked for "/live": the page's relative
            # URLs ("stats") only resolve below "/live/".
            location = scope.get("path", "") + "/"
            query = scope.get("query_string", b"")
            target = location.encode() + (b"?" + query if query else b"")
            await _send(send, 307, b"", _HTML, head, [(b"location", target)])
            return
        route = self._routes.get(path)
        if route is None:
            body = _json({"error": "not found", "paths": sorted(self._routes)})
            await _send(send, 404, body, _JSON, head)
            return
        if scope.get("method") not in ("GET", "HEAD"):
            body = _json({"error": f"method {scope.get('method')} not allowed"})
            await _send(send, 405, body, _JSON, head, [(b"allow", _ALLOWED)])
            return
        status, body, content_type = await route()
        extra = [(b"content-security-policy", _PAGE_CSP)] if path == "/" else []
        await _send(send, status, body, content_type, head, extra)


async def _send(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    head: bool,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        # Every answer is "now": a cached one would show a stale flow.
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})
