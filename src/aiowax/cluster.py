"""Cluster mode: copies of an application share a flow's work through Kafka.

Run the same flow in several processes or machines with the same
`KafkaCluster`; Kafka's consumer-group protocol assigns each copy some
partitions of the flow's `KafkaSource` topics and of the internal
repartition topics that bring each key to one copy, and moves them when a
copy stops, dies or joins. Keyed state lives in changelog topics and moves
with its partition. Needs the kafka extra (``pip install '.[kafka]'`` in the checkout).

    await aiowax.run(flow, cluster=KafkaCluster(brokers=["kafka:9092"], app_id="orders"))

or ``python -m aiowax FLOW --kafka-cluster kafka:9092 --app-id orders -p 4``.
See docs/scale-out.md for the model, the topics, the guarantees and what
cluster mode refuses.
"""

from aiowax._cluster.config import KafkaCluster
from aiowax._errors import ClusterError
from aiowax._util import fixup_module_metadata

__all__ = ["ClusterError", "KafkaCluster"]

fixup_module_metadata(__name__, __all__, globals())
