"""The runtime: runs a `Dataflow` as async tasks linked by bounded channels.

A map of the core, following one item from source to sink::

    Dataflow (aiowax._definition)   plain data: one Step dataclass per step
      |  plan.compile_flow          -> pipelines (an input and its steps)
      |  wiring.build_graph         -> the Graph: every task, linked; reads kinds.KINDS
      v
    lane            lanes.Lane       one task per source partition: reads
      |                              batches, closes epochs (EpochBarrier)
    channel         channels         a bounded anyio stream of micro-batches,
      |                              with markers between them (messages)
    link            exchange         LocalLink (same worker) or InProcessExchange
      |                              (routing: by key, spread, by sink partition)
    operator        ops/*            one step on one worker, driven through the
      |                              lifecycle of ops.base by driver._drive
    ... more links and operators ...
      v
    output          ops/output.py    writes to the sink's partitions, passes on

Around the data path: ``driver`` runs the graph in one task group and owns the
failure path (``context.RunContext`` records the first error; ``errors``
holds the engine's internal signals); ``edges`` tells in-process sources
and sinks when a run starts and ends; ``usercode`` calls async user code;
``clock`` is the one source of time; ``aio`` holds every asyncio-specific
primitive; ``aiowax._recovery.runtime`` snapshots and commits epochs.

Where new things go: a new operator is a step class (``_definition/steps``),
an operator class in ``ops/`` and one line in ``kinds.KINDS``; a new
connector is a source or sink (``aiowax._definition.inputs``/``outputs``)
in ``aiowax._connectors``, and needs no change here; a new way to move items
between workers is a ``exchange.Link``.
"""
