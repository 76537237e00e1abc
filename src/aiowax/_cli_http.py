"""``python -m aiowax FLOW --http [HOST:]PORT``: the live page next to the running flow.

`aiowax._cli` parses the option (`add_options`, `address`) and binds the
socket before it loads the flow (`listener_of`), so a busy port is a usage
error rather than a flow that ran and then failed; `live_page` is then the
companion that `aiowax._cli_run.run_until_stopped` runs beside the flow: a
uvicorn server of `aiowax.asgi.live_app`, stopped when the flow ends.

The server leaves the signals to the command line (SIGTERM and SIGINT stop
the flow gracefully, then the server), and writes nothing to stdout, which
a flow's `StdOutSink` owns: no access log, and its own log records go to
stderr through the ``uvicorn`` loggers.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anyio

from aiowax._cli_run import Companion
from aiowax._definition.flow import Dataflow
from aiowax._embed import FlowHandle
from aiowax._live.app import LiveApp
from aiowax._util import install_hint

ENV_HTTP = "AIOWAX_HTTP"
#: Where ``--http PORT`` listens: loopback only. Other interfaces must be
#: written out, as the page has no authentication.
DEFAULT_HOST = "127.0.0.1"
WEB_HINT = install_hint("web")
#: Seconds the server waits for requests in flight once the flow has ended.
_SHUTDOWN_S = 2
#: Seconds a connection has to send a whole request head, from when it opens
#: or its last response went out; then it is closed.
HEAD_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class HttpAddress:
    """Where the live page listens."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def address(text: str) -> HttpAddress:
    """Parse ``--http``: ``PORT`` (on 127.0.0.1), ``HOST:PORT`` or ``[IPV6]:PORT``.

    Raises:
        argparse.ArgumentTypeError: The text is none of those.
    """
    raw = text.strip()
    host, sep, port_text = raw.rpartition(":")
    if not sep:
        host = DEFAULT_HOST
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_ipv6(host):
            msg = f"{host!r} in brackets is not an IPv6 address, in {text!r}"
            raise argparse.ArgumentTypeError(msg)
    elif ":" in host:
        msg = f"write an IPv6 address in brackets, e.g. '[::1]:3030', got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    elif not host:
        msg = f"a host before ':' (or no ':' for {DEFAULT_HOST}), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    if not (port_text.isascii() and port_text.isdigit()) or not 0 <= int(port_text) <= 65535:
        msg = f"expected [HOST:]PORT with a port from 0 to 65535, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return HttpAddress(host, int(port_text))


def _is_ipv6(host: str) -> bool:
    try:
        ipaddress.IPv6Address(host)
    except ValueError:
        return False
    return True


def add_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--http`` to the command line's parser."""
    parser.add_argument(
        "--http",
        metavar="[HOST:]PORT",
        type=address,
        help="serve the live page of the running flow, with /stats, /dataflow, /livez, "
        f"/readyz and /metrics, on HOST:PORT; a bare PORT listens on {DEFAULT_HOST} only. "
        "The page has no authentication and shows step ids and error messages: to "
        "listen on other interfaces write the host out, e.g. 0.0.0.0:3030. Port 0 "
        f"picks a free port (the address goes to stderr). Needs uvicorn: {WEB_HINT} "
        f"(env {ENV_HTTP}; default: no server)",
    )


def listener_of(
    parser: argparse.ArgumentParser, options: argparse.Namespace
) -> socket.socket | None:
    """The listening socket ``--http`` asks for, if any; usage errors exit with 2."""
    where: HttpAddress | None = options.http
    if where is None:
        return None
    if (getattr(options, "processes", None) or 1) > 1:
        parser.error(
            "--http serves one process's flow: it does not go with -p/--processes "
            "(each copy would need its own port)"
        )
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        parser.error(f"--http needs uvicorn, which is not installed: {WEB_HINT}")
    try:
        family = socket.AF_INET6 if _is_ipv6(where.host) else socket.AF_INET
        return socket.create_server((where.host, where.port), family=family)
    except OSError as error:
        parser.error(f"--http {where}: cannot listen there: {error.strerror or error}")


def url_of(listener: socket.socket) -> str:
    """The page's URL (the port the system picked, for port 0)."""
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _protocol() -> type[Any]:
    """The h11 protocol of uvicorn, with a deadline for each request head.

    Uvicorn has none: a connection that opens and sends part of a head (or
    nothing) holds a socket for ever, and with ~85 of them at a 100-file
    limit the probes' own requests failed (``/livez`` too, which would
    have a supervisor restart a healthy process). The keep-alive timeout
    does not cover it: any byte received cancels it.
    """
    import asyncio

    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeadDeadlineProtocol(H11Protocol):
        _head_timer: asyncio.TimerHandle | None = None
        _head_of: object = None

        def _arm(self) -> None:
            self._disarm()
            self._head_of = self.cycle  # a new head makes a new cycle
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_late)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_late(self) -> None:
            self._head_timer = None
            if self.cycle is self._head_of and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)  # type: ignore[arg-type]
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not self._head_of:
                self._disarm()  # its head is in

        def on_response_complete(self) -> None:
            super().on_response_complete()
            cycle = self.cycle
            # Armed unless a pipelined request has started meanwhile.
            if not self.transport.is_closing() and cycle is not None and cycle.response_complete:
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeadDeadlineProtocol


def _server(app: Any) -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # The command line handles SIGTERM and SIGINT (stop the flow,
            # then this server); uvicorn's handlers would replace them, and
            # raise the signal again at the end.
            yield

    config = uvicorn.Config(
        app,
        lifespan="off",
        access_log=False,
        # No logging set-up of uvicorn's own: its default sends the access
        # log to stdout. Its warnings reach stderr through the root logger.
        log_config=None,
        log_level="warning",
        timeout_graceful_shutdown=_SHUTDOWN_S,
        http=_protocol(),
    )
    return Server(config)


def live_page(listener: socket.socket, flow: Dataflow, prog: str) -> Companion:
    """The companion that serves the live page of ``flow`` until it has ended."""

    async def serve(handle: FlowHandle) -> None:
        server = _server(LiveApp(handle, flow))
        async with anyio.create_task_group() as tg:
            tg.start_soon(_serve, server, listener, prog)
            print(f"{prog}: live page at {url_of(listener)}", file=sys.stderr, flush=True)
            with contextlib.suppress(Exception):
                await handle.wait()
            # The page of a flow that has ended has nothing more to show.
            server.should_exit = True

    return serve


async def _serve(server: Any, listener: socket.socket, prog: str) -> None:
    try:
        await server.serve(sockets=[listener])
    except Exception as error:
        # The page is an aid: the flow, the job, goes on without it.
        print(
            f"{prog}: the live page's server failed ({type(error).__name__}: {error}); "
            "the flow goes on",
            file=sys.stderr,
            flush=True,
        )
