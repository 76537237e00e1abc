"""A flow in a Starlette or FastAPI app: started by the lifespan, read by endpoints.

Nothing here imports Starlette when the module loads: `live_app` must work
without the ``web`` extra, and the lifespan only needs an app with a
``state`` attribute. FastAPI finds the request for `flow_handle` by its
annotation, so that one annotation is looked up lazily, when FastAPI asks.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from typing import Any

import anyio

from aiowax._definition.flow import Dataflow
from aiowax._embed import FlowHandle, FlowStatus, _timeout_seconds, start_flow
from aiowax._engine.driver import check_options

logger = logging.getLogger("aiowax")

#: Seconds a graceful stop may take at shutdown by default: as on the
#: command line, below the 30 s Kubernetes waits before SIGKILL.
DEFAULT_STOP_TIMEOUT = 25.0
_RUN_OPTIONS = frozenset({"workers", "epoch_interval", "recovery_config", "cluster"})

Lifespan = Callable[[Any], AbstractAsyncContextManager[None]]


def flow_lifespan(
    flow: Dataflow,
    *,
    stop_timeout: float | timedelta | None = DEFAULT_STOP_TIMEOUT,
    state_name: str = "flow",
    **run_options: Any,
) -> Lifespan:
    """A lifespan that runs ``flow`` for as long as the app serves.

    ``Starlette(lifespan=flow_lifespan(flow))`` or
    ``FastAPI(lifespan=flow_lifespan(flow))``. At startup the flow is
    started (`aiowax.start_flow`) in the lifespan's task group and its
    `FlowHandle` is put at ``app.state.<state_name>``, where endpoints find
    it (`flow_handle`). A failure of the flow does not take the server
    down: it is logged at once on the ``aiowax`` logger, with its
    traceback, and the handle shows it (``status``, ``error``; ``/readyz``
    of `live_app` answers 503).

    At shutdown the flow is stopped gracefully (`FlowHandle.stop`): the
    sources stop reading, what they read goes through, the sinks close, and
    with recovery a final snapshot is committed. If that takes longer than
    ``stop_timeout`` the flow is aborted: its sources and sinks are closed,
    but no final snapshot is taken. Keep the timeout below the time the
    server (uvicorn's ``--timeout-graceful-shutdown``, gunicorn's
    ``--graceful-timeout``) or the orchestrator gives the process.

    Args:
        flow: The dataflow to run.
        stop_timeout: The longest a graceful stop may take at shutdown, in
            seconds or as a `datetime.timedelta` (25 s by default); ``None``
            waits as long as it takes.
        state_name: The attribute of ``app.state`` that holds the handle.
        **run_options: ``workers``, ``epoch_interval``, ``recovery_config``
            or ``cluster``, as `aiowax.start_flow` takes them.

    Returns:
        A function of the app returning an async context manager: what
            Starlette and FastAPI take as ``lifespan=``.

    Raises:
        TypeError: An unknown run option, or ``stop_timeout`` of a wrong type.
        ValueError: ``state_name`` is not an identifier, or ``stop_timeout``
            is negative.
    """
    if not isinstance(flow, Dataflow):
        msg = f"flow_lifespan: flow must be a Dataflow, got {type(flow).__name__}"
        raise TypeError(msg)
    if not state_name.isidentifier():
        msg = f"flow_lifespan: state_name must be an identifier, got {state_name!r}"
        raise ValueError(msg)
    unknown = sorted(set(run_options) - _RUN_OPTIONS)
    if unknown:
        msg = (
            f"flow_lifespan: unknown run option(s) {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(_RUN_OPTIONS))}"
        )
        raise TypeError(msg)
    # Checked now, at import time of the app, rather than at its startup
    # (the options) or its shutdown (the timeout).
    check_options(
        "flow_lifespan",
        run_options.get("workers", 1),
        run_options.get("epoch_interval"),
        run_options.get("recovery_config"),
        run_options.get("cluster"),
    )
    timeout = _timeout_seconds(stop_timeout)

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        state = getattr(app, "state", None)
        if state is None:
            msg = f"flow_lifespan: the app has no 'state' to put the flow's handle on: {app!r}"
            raise TypeError(msg)
        async with anyio.create_task_group() as tg:
            # propagate=False: a failed flow is logged and shown by its
            # handle; raised in this group it would stop the whole server.
            handle = await start_flow(tg, flow, propagate=False, **run_options)
            setattr(state, state_name, handle)
            try:
                yield
            except BaseException:
                # The server is going down the hard way: no graceful stop.
                tg.cancel_scope.cancel()
                raise
            await _stop(handle, timeout)

    return lifespan


async def _stop(handle: FlowHandle, timeout: float | None) -> None:
    """Stop gracefully within ``timeout``; log what went wrong rather than raise.

    Raising from a lifespan's shutdown only makes the server log a second,
    vaguer error: the flow's failure was already logged when it happened.
    """
    failed_before = handle.status is FlowStatus.FAILED
    try:
        await handle.stop(timeout=timeout)
    except TimeoutError as error:
        if error is handle.error:
            if not failed_before:
                logger.error("flow %r failed while stopping", handle.name, exc_info=error)
            return
        logger.warning(
            "flow %r did not stop within %g s: aborted, without a final snapshot",
            handle.name,
            timeout,
        )
    except Exception as error:
        if not failed_before:
            # Failures while `stop` waits are not logged by the handle.
            logger.error("flow %r failed while stopping", handle.name, exc_info=error)


class FlowHandleDependency:
    """`flow_handle`'s type: reads a request's ``app.state.flow``.

    A callable object rather than a function: FastAPI injects the request
    into a dependency by the annotation of its parameter, which must be
    Starlette's ``Request``; the signature is built when FastAPI asks for it,
    so that importing `aiowax.asgi` does not import Starlette.
    """

    def __init__(self, state_name: str = "flow") -> None:
        self._state_name = state_name

    def __call__(self, request: Any) -> FlowHandle:
        """The handle `flow_lifespan` put on the request's app.

        Args:
            request: A Starlette (or FastAPI) request.

        Returns:
            The running flow's handle.

        Raises:
            RuntimeError: The app has no handle there: `flow_lifespan` is not
                its lifespan (or puts the handle under another name), or its
                startup has not run.
        """
        state = getattr(getattr(request, "app", None), "state", None)
        handle = getattr(state, self._state_name, None)
        if not isinstance(handle, FlowHandle):
            msg = (
                f"no flow at app.state.{self._state_name}: give the app the lifespan "
                "aiowax.asgi.flow_lifespan(flow) (Starlette(lifespan=...) or "
                "FastAPI(lifespan=...)) and serve it with its lifespan on"
            )
            raise RuntimeError(msg)
        return handle

    @property
    def __signature__(self) -> inspect.Signature:
        """``(request: starlette.requests.Request) -> FlowHandle``, for FastAPI."""
        try:
            from starlette.requests import Request

            annotation: Any = Request
        except ImportError:  # pragma: no cover - only FastAPI reads it
            annotation = Any
        parameter = inspect.Parameter(
            "request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation
        )
        return inspect.Signature([parameter], return_annotation=FlowHandle)

    def __repr__(self) -> str:
        return f"<flow_handle: request.app.state.{self._state_name}>"
