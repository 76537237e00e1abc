"""OpenTelemetry metrics and spans of running flows (the ``aiowax[otel]`` extra).

aiowax depends on opentelemetry-api only and never configures an SDK: your
application sets up its providers and exporters, and aiowax reports to
them.

- Metrics: `instrument_metrics` creates observable instruments over the
  figures of `aiowax.stats.FlowStats` (``aiowax.step.items_in``,
  ``aiowax.window.watermark_lag``...), read when your reader collects.
- Spans: with opentelemetry-api installed, every run is traced through the
  tracer ``"aiowax"``, with no call needed: ``aiowax.run`` for a run,
  ``aiowax.snapshot`` for each commit to the recovery store, and in cluster
  mode ``aiowax.cluster.generation`` for each assignment and
  ``aiowax.cluster.restore`` for loading its state. None per item.

``docs/metrics.md`` lists the instruments and span attributes. Importing
this module without opentelemetry-api installed raises an `ImportError`
that says what to install.
"""

from aiowax._stats.otel import StatsInstruments, instrument_metrics
from aiowax._util import fixup_module_metadata

__all__ = ["StatsInstruments", "instrument_metrics"]

fixup_module_metadata(__name__, __all__, globals())
