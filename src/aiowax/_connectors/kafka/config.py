"""Argument checks of the Kafka connectors and the librdkafka settings they build.

``add_config`` takes librdkafka property names, as the reference documented,
and they go to the client as given; but only the keys of an explicit
allow-list, so a typo (``"sasl.mechanisim"``) or a key that would break the
connector's own bookkeeping is refused at once with a clear error instead of
a warning in librdkafka's log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import timedelta

import confluent_kafka

from aiowax._checks import timedelta_arg

#: Start at the oldest message still in the partition.
OFFSET_BEGINNING: int = confluent_kafka.OFFSET_BEGINNING
#: Start after the newest message: read only what is produced from now on.
OFFSET_END: int = confluent_kafka.OFFSET_END

#: Keys both clients take: connection, security, client identity, sockets.
COMMON_KEYS = frozenset(
    {
        "client.id",
        "client.rack",
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.username",
        "sasl.password",
        "sasl.kerberos.service.name",
        "sasl.kerberos.principal",
        "sasl.kerberos.keytab",
        "sasl.oauthbearer.config",
        "sasl.oauthbearer.method",
        "sasl.oauthbearer.client.id",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.token.endpoint.url",
        "sasl.oauthbearer.scope",
        "ssl.ca.location",
        "ssl.ca.pem",
        "ssl.certificate.location",
        "ssl.certificate.pem",
        "ssl.key.location",
        "ssl.key.pem",
        "ssl.key.password",
        "ssl.endpoint.identification.algorithm",
        "ssl.cipher.suites",
        "enable.ssl.certificate.verification",
        "socket.timeout.ms",
        "socket.keepalive.enable",
        "socket.connection.setup.timeout.ms",
        "socket.send.buffer.bytes",
        "socket.receive.buffer.bytes",
        "socket.nagle.disable",
        "connections.max.idle.ms",
        "reconnect.backoff.ms",
        "reconnect.backoff.max.ms",
        "retry.backoff.ms",
        "retry.backoff.max.ms",
        "request.timeout.ms",
        "metadata.max.age.ms",
        "topic.metadata.refresh.interval.ms",
        "message.max.bytes",
        "receive.message.max.bytes",
        "broker.address.family",
        "client.dns.lookup",
        "api.version.request",
        "broker.version.fallback",
        "log_level",
        "debug",
        "statistics.interval.ms",
    }
)

#: Keys only `KafkaSource` takes (its consumer's fetching).
CONSUMER_KEYS = frozenset(
    {
        "fetch.min.bytes",
        "fetch.max.bytes",
        "fetch.wait.max.ms",
        "fetch.message.max.bytes",
        "max.partition.fetch.bytes",
        "fetch.queue.backoff.ms",
        "fetch.error.backoff.ms",
        "queued.min.messages",
        "queued.max.messages.kbytes",
        "isolation.level",
        "check.crcs",
        "auto.offset.reset",
    }
)

#: Keys only `KafkaSink` takes (its producer's batching and delivery).
PRODUCER_KEYS = frozenset(
    {
        "acks",
        "request.required.acks",
        "linger.ms",
        "queue.buffering.max.ms",
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
        "batch.size",
        "batch.num.messages",
        "compression.type",
        "compression.codec",
        "compression.level",
        "enable.idempotence",
        "message.timeout.ms",
        "delivery.timeout.ms",
        "message.send.max.retries",
        "retries",
        "max.in.flight.requests.per.connection",
        "max.in.flight",
        "partitioner",
        "sticky.partitioning.linger.ms",
    }
)

#: Keys the connectors set themselves, and why a user may not.
MANAGED_KEYS = {
    "bootstrap.servers": "pass the brokers as the brokers argument",
    "metadata.broker.list": "pass the brokers as the brokers argument",
    "enable.auto.commit": "the source never commits offsets to Kafka",
    "enable.auto.offset.store": "the source never commits offsets to Kafka",
    "enable.partition.eof": "tail=False ends the partitions (see the docs)",
    "allow.auto.create.topics": "the source reads only topics that exist",
}

_GROUP_ID_MSG = (
    "KafkaSource: add_config may not set 'group.id': the source keeps no "
    "consumer group; each partition's offset is saved in aiowax's recovery "
    "snapshots and the source resumes from there (see docs/kafka.md). To share "
    "the partitions between processes through a consumer group, run the flow in "
    "cluster mode: aiowax.run(flow, cluster=KafkaCluster(brokers, app_id)) or "
    "python -m aiowax --kafka-cluster HOST:PORT --app-id NAME (docs/scale-out.md)."
)

#: The consumer settings the source always uses (before ``add_config``).
CONSUMER_DEFAULTS: dict[str, str | int | bool] = {
    # librdkafka's Consumer requires a group id even when, as here, it only
    # assigns partitions by hand and never joins the group nor commits.
    "group.id": "aiowax-kafka-source-no-group",
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": False,
    "allow.auto.create.topics": False,
    # The default (1000 ms) stalls a busy partition for a second whenever its
    # prefetch queue fills (benchmarks/RESULTS.md, issue 12).
    "fetch.queue.backoff.ms": 10,
    # A resume offset no longer in the partition (retention deleted it)
    # restarts from the oldest message: duplicates rather than a silent gap.
    "auto.offset.reset": "earliest",
}

#: The producer settings the sink always uses (before ``add_config``).
PRODUCER_DEFAULTS: dict[str, str | int | bool] = {
    # Bound every delivery, so a sink never waits on an absent broker for
    # librdkafka's default 5 minutes.
    "message.timeout.ms": 30_000,
}

ConfigValue = str | int | float | bool


def str_iterable(where: str, name: str, value: object) -> list[str]:
    """Return ``value`` as a non-empty list of non-empty strs.

    Raises:
        TypeError: A str (not an iterable of them), or items not strs.
        ValueError: Empty.
    """
    if isinstance(value, str | bytes):
        msg = f"{name} must be an iterable and not a string"
        raise TypeError(msg)
    if not isinstance(value, Iterable):
        msg = f"{where}: {name} must be an iterable of str, got {value!r}"
        raise TypeError(msg)
    items = list(value)
    for item in items:
        if not isinstance(item, str) or not item:
            msg = f"{where}: {name} must hold non-empty strs, got {item!r}"
            raise TypeError(msg)
    if not items:
        msg = f"{where}: {name} must not be empty"
        raise ValueError(msg)
    return items


def check_add_config(
    where: str, add_config: Mapping[str, object] | None, allowed: frozenset[str]
) -> dict[str, ConfigValue]:
    """Return ``add_config`` as a dict, once every key is known and every value plain.

    Raises:
        TypeError: Not a mapping of str keys to str/int/float/bool values.
        ValueError: A key outside ``allowed``, or one the connector manages.
    """
    if add_config is None:
        return {}
    if not isinstance(add_config, Mapping):
        msg = f"{where}: add_config must be a dict of librdkafka settings, got {add_config!r}"
        raise TypeError(msg)
    config: dict[str, ConfigValue] = {}
    for key, value in add_config.items():
        if not isinstance(key, str):
            msg = f"{where}: add_config keys must be strs, got {key!r}"
            raise TypeError(msg)
        if key == "group.id" and where == "KafkaSource":
            raise ValueError(_GROUP_ID_MSG)
        if key in MANAGED_KEYS:
            msg = f"{where}: add_config may not set {key!r}: {MANAGED_KEYS[key]}"
            raise ValueError(msg)
        if key not in allowed:
            msg = (
                f"{where}: unknown or unsupported add_config key {key!r}; the keys "
                "accepted are librdkafka's common connection, security and "
                f"tuning settings: {', '.join(sorted(allowed))}"
            )
            raise ValueError(msg)
        if not isinstance(value, ConfigValue):
            msg = f"{where}: add_config[{key!r}] must be a str, int, float or bool, got {value!r}"
            raise TypeError(msg)
        config[key] = value
    return config


def check_timeout(where: str, timeout: object) -> float:
    """Return ``timeout`` (a positive timedelta) in seconds."""
    return timedelta_arg(where, "timeout", timeout, allow_zero=False) / timedelta(seconds=1)


def check_starting_offset(value: object) -> int:
    """Return ``value`` if it is `OFFSET_BEGINNING` or `OFFSET_END`."""
    if isinstance(value, bool) or value not in (OFFSET_BEGINNING, OFFSET_END):
        msg = (
            "KafkaSource: starting_offset must be OFFSET_BEGINNING or OFFSET_END "
            f"(from aiowax.connectors.kafka), got {value!r}"
        )
        raise ValueError(msg)
    assert isinstance(value, int)
    return value


def check_bool(where: str, name: str, value: object) -> bool:
    """Return ``value`` if it is a bool."""
    if not isinstance(value, bool):
        msg = f"{where}: {name} must be a bool, got {value!r}"
        raise TypeError(msg)
    return value
