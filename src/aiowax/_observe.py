"""OpenTelemetry spans around the few long operations of a run.

`span` marks a run, a snapshot commit, a cluster generation or its restore:
operations that happen once per run or per epoch, never per item. Without
opentelemetry-api installed it is a shared `contextlib.nullcontext`, found
once and cached. With it, spans go to the tracer ``"aiowax"`` of whatever
tracer provider the application set up (the API's no-op one if it set up
none); aiowax never configures an SDK.
"""

from __future__ import annotations

import functools
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from aiowax._version import __version__

#: The name of aiowax's tracer and meter.
INSTRUMENTATION_NAME = "aiowax"

_NO_SPAN: AbstractContextManager[None] = nullcontext()


@functools.cache
def _tracer() -> Any:
    """The ``aiowax`` tracer, or ``None`` without opentelemetry-api."""
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    # A proxy until the application sets its provider, which it then follows.
    return trace.get_tracer(INSTRUMENTATION_NAME, __version__)


def span(name: str, **attributes: str | int | float | bool) -> AbstractContextManager[Any]:
    """A span ``name`` around a ``with`` block, made current for it.

    Each keyword becomes an attribute named ``aiowax.<keyword>``. An
    exception leaving the block is recorded on the span and sets its
    status to ERROR; a cancellation ends it without an error status.
    """
    tracer = _tracer()
    if tracer is None:
        return _NO_SPAN
    # The API records an Exception and sets ERROR; a cancellation (a
    # BaseException) passes through and leaves the status unset.
    named = {f"aiowax.{key}": value for key, value in attributes.items()}
    return tracer.start_as_current_span(name, attributes=named)  # type: ignore[no-any-return]
