"""The runtime: compiles a `Dataflow` into tasks linked by bounded channels."""
