"""Cluster mode: a flow's work shared between processes through Kafka.

The map, from the outside in:

- `config`: `KafkaCluster`, the settings of the application's copies.
- `runtime`: one copy: the front flow (the `DynamicSource` pipelines every
  copy reads) and a generation per assignment Kafka makes.
- `group`: the copy's consumer-group membership: assignments in,
  revocations acknowledged once the generation has stopped and committed.
- `topology`: where a pipeline is cut (before its first keyed step), and
  the flows each copy runs; `tagging`: the items before a cut carry their
  origin, so a failover's rereads are dropped after the cut.
- `repartition`: the Kafka exchange: the repartition sink and reader, and a
  user's `KafkaSource` limited to the assigned partitions.
- `store`: the recovery store on Kafka: changelog records, commit markers,
  the group's offsets; `topics`: internal topics created and checked.
"""
