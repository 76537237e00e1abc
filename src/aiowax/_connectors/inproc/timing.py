"""How long the in-process connectors wait before they look again."""

#: Longest an idle in-process source waits before returning an empty batch,
#: so that epochs (and their snapshots) keep closing while nothing arrives.
IDLE_RETURN_SECONDS = 0.25

#: How often a write blocked on `BroadcastSink` readers looks at them again
#: without being woken: a subscription dropped by the garbage collector
#: outside the loop's thread cannot wake it.
REWAKE_SECONDS = 1.0
