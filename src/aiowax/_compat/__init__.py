"""Bytewax 0.17.2's names and call forms, on top of the method API.

Released Bytewax 0.17.2 code should run with only its import root changed.
The classes here keep 0.17.2's names and method signatures
(``build_part(for_part, resume_state)``, ``next_batch()``...) and adapt them
to what the engine calls; the public modules re-export them where 0.17.2 had
them. `calls` lets `Dataflow` accept 0.17.2's calls (``flow.map(fn)``
without a step id). See docs/migration.md for what differs and why.
"""
