"""Prometheus metrics of running flows (the ``aiowax[prometheus]`` extra).

Register a `StatsCollector` in your own `prometheus_client.CollectorRegistry`
(aiowax never touches the global default registry) and serve the registry,
for instance with `make_asgi_app`:

    from prometheus_client import CollectorRegistry
    from aiowax.prometheus import StatsCollector, make_asgi_app

    registry = CollectorRegistry()
    registry.register(StatsCollector(handle))
    metrics_app = make_asgi_app(registry)  # mount at /metrics

The metrics are the figures of `aiowax.stats.FlowStats`, read at each
scrape, named ``aiowax_...`` in base units (seconds), labelled ``flow``,
``step_id`` and ``worker_index``; ``docs/metrics.md`` lists them.

Importing this module without prometheus-client installed raises an
`ImportError` that says what to install.
"""

from aiowax._stats.prometheus import StatsCollector, make_asgi_app
from aiowax._util import fixup_module_metadata

__all__ = ["StatsCollector", "make_asgi_app"]

fixup_module_metadata(__name__, __all__, globals())
