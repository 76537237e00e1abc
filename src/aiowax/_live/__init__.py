"""The live page of a running flow, and the ASGI pieces around it.

``app`` is a plain ASGI 3 app (the page, its stats JSON, the graph, the
probes, Prometheus metrics); ``page.html`` is the page itself, one
self-contained file; ``lifespan`` starts and stops a flow with a Starlette or
FastAPI app. `aiowax.asgi` is their public face.
"""
