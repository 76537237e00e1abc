"""OpenTelemetry observable instruments over flows' stats (the API only)."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable
from types import TracebackType

from aiowax._util import install_hint

try:
    from opentelemetry import metrics
    from opentelemetry.metrics import CallbackOptions, Meter, Observation
except ImportError as error:
    msg = "aiowax.otel needs opentelemetry-api, which is not installed: " + install_hint("otel")
    raise ImportError(msg, name=error.name) from error

from aiowax._observe import INSTRUMENTATION_NAME
from aiowax._stats.metrics import (
    FLOW_METRICS,
    GUARDED,
    STATUS_METRIC,
    STATUSES,
    STEP_METRICS,
    MetricSpec,
    Monotonic,
    Sources,
    StatsSource,
)
from aiowax._stats.model import FlowStats
from aiowax._version import __version__

_Callback = Callable[[CallbackOptions], Iterable[Observation]]


class StatsInstruments:
    """The instruments `instrument_metrics` made; `close` stops their reports.

    OpenTelemetry's API cannot remove an instrument from its meter, so
    closing leaves the instruments in place but makes their callbacks
    report nothing (and read no flow) from then on. Usable as a context
    manager, which closes it on exit.

    Attributes:
        instruments: The observable counters and gauges, in table order.
    """

    def __init__(self, sources: Sources, meter: Meter) -> None:
        self._sources = sources
        self._closed = False
        self._lock = threading.Lock()
        self._monotonic = Monotonic()
        # One read of the sources per collection: each instrument's callback
        # takes the current reading, and the first to come back for a second
        # one starts the next collection with a fresh read.
        self._reading: list[FlowStats] | None = None
        self._taken: set[str] = set()
        made: list[object] = []
        for spec in FLOW_METRICS:
            made.append(_create(meter, spec, self._flow_callback(spec)))
        made.append(_create(meter, STATUS_METRIC, self._status_callback()))
        for spec in STEP_METRICS:
            made.append(_create(meter, spec, self._step_callback(spec)))
        self.instruments: tuple[object, ...] = tuple(made)

    @property
    def closed(self) -> bool:
        """Whether `close` was called."""
        return self._closed

    def close(self) -> None:
        """Stop reporting: the callbacks observe nothing from now on. Idempotent.

        The flows are let go of too: a closed `StatsInstruments` keeps no
        handle (nor the run's state behind it) alive.
        """
        with self._lock:
            self._closed = True
            self._reading = None
            self._sources = Sources("instrument_metrics", ())

    def _reopen(self, sources: Sources) -> None:
        """Report ``sources`` with these instruments (closed ones of the same meter)."""
        with self._lock:
            self._sources = sources
            self._monotonic = Monotonic()
            self._closed = False

    def __enter__(self) -> StatsInstruments:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _flows(self, instrument: str) -> list[FlowStats]:
        with self._lock:
            if self._closed:
                return []
            if self._reading is not None and instrument not in self._taken:
                self._taken.add(instrument)
                return self._reading
            sources = self._sources
        # Read unlocked: the read may wait for the flows' event loop, which
        # may be collecting too.
        reading = sources.read()
        with self._lock:
            if self._closed or self._sources is not sources:
                return []  # closed, or reopened for other flows, meanwhile
            self._monotonic.keep(reading)
            self._reading = reading
            self._taken = {instrument}
            return reading

    def _flow_callback(self, spec: MetricSpec) -> _Callback:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for stats in self._flows(spec.otel):
                value = spec.value(stats)
                if value is not None:
                    out.append(Observation(value, {"flow": stats.name}))
            return out

        return observe

    def _status_callback(self) -> _Callback:
        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(int(stats.status == status), {"flow": stats.name, "status": status})
                for stats in self._flows(STATUS_METRIC.otel)
                for status in STATUSES
            ]

        return observe

    def _step_callback(self, spec: MetricSpec) -> _Callback:
        guarded = spec.prom in GUARDED

        def observe(_options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for stats in self._flows(spec.otel):
                for row in stats.steps:
                    value = spec.value(row)
                    if value is None:
                        continue
                    if guarded:
                        value = self._monotonic.value(stats, row, spec.prom, value)
                    attributes: dict[str, str | int] = {
                        "flow": stats.name,
                        "step_id": row.step_id,
                        "worker_index": row.worker_index,
                    }
                    out.append(Observation(value, attributes))
            return out

        return observe


def _create(meter: Meter, spec: MetricSpec, callback: _Callback) -> object:
    if spec.counter:
        return meter.create_observable_counter(
            spec.otel, callbacks=[callback], unit=spec.unit, description=spec.help
        )
    return meter.create_observable_gauge(
        spec.otel, callbacks=[callback], unit=spec.unit, description=spec.help
    )


def instrument_metrics(*sources: StatsSource, meter: Meter | None = None) -> StatsInstruments:
    """Report flows' stats as OpenTelemetry metrics.

    Creates observable counters and gauges (``aiowax.step.items_in``,
    ``aiowax.flow.epoch``...; ``docs/metrics.md`` lists them) whose callbacks
    read every source once per collection, when the application's metric
    reader collects. Attributes are ``flow``, ``step_id`` and
    ``worker_index``, never a key or an item. aiowax configures no SDK:
    without one (``opentelemetry.metrics.set_meter_provider``, or a
    ``meter`` of your own provider) the API's no-op meter observes nothing.

    Call it once per meter at a time, with every flow. A call on a meter
    whose instruments were closed reuses them (a service that restarts its
    flow instruments each run in turn); a call on a meter whose instruments
    are open is refused: an SDK keeps a meter's first instruments of a name,
    so new ones would never report.

    Args:
        *sources: The flows: `aiowax.FlowHandle` objects, or functions taking
            no argument and returning a `aiowax.stats.FlowStats` or ``None``.
        meter: The meter to create the instruments with; by default the
            global meter provider's meter ``"aiowax"``.

    Returns:
        A handle on the instruments; `StatsInstruments.close` stops their
            reports (the API cannot remove instruments).

    Raises:
        TypeError: A source is neither a handle nor a function.
        ValueError: Two handles have the same flow name, or the meter's
            instruments are open.
    """
    checked = Sources("instrument_metrics", sources)
    with _made_guard:
        if meter is None:
            meter = _default_meter()
        made = _made.get(meter)
        if made is not None:
            if not made.closed:
                msg = (
                    "instrument_metrics: this meter already reports flows, with instruments "
                    "that are not closed; close them first (leave their with block), or pass "
                    "every flow to one call"
                )
                raise ValueError(msg)
            # An SDK keeps a meter's first instruments of a name: new ones
            # would never report. The closed ones take the new flows.
            made._reopen(checked)
            return made
        made = _made[meter] = StatsInstruments(checked, meter)
        return made


def _default_meter() -> Meter:
    """The global provider's meter "aiowax", the same object on every call.

    Before an SDK is set, the API hands out a new proxy meter on each call
    (each forwards to the SDK once it is set): a second set of instruments
    would then go unnoticed here, and unreported by the SDK.
    """
    global _default
    if _default is None:
        _default = metrics.get_meter(INSTRUMENTATION_NAME, __version__)
    return _default


_default: Meter | None = None

# The instruments made on each meter (see `instrument_metrics`).
_made: weakref.WeakKeyDictionary[Meter, StatsInstruments] = weakref.WeakKeyDictionary()
_made_guard = threading.Lock()
