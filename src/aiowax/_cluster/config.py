"""`KafkaCluster`: where the copies of an application meet, and how they share the work."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiowax._checks import positive_int
from aiowax._errors import ClusterError

#: What Kafka accepts in a topic name (and so in an app id and step id here).
_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")


def check_topic_part(what: str, text: str) -> str:
    """Refuse ``text`` (an app id, a step id) where it must be part of a topic name."""
    if not _TOPIC_CHARS.match(text):
        msg = (
            f"cluster mode: {what} {text!r} cannot be part of a Kafka topic name "
            "(letters, digits, '.', '_' and '-' only)"
        )
        raise ClusterError(msg)
    return text


def _seconds(where: str, name: str, value: object, low: float) -> float:
    if not isinstance(value, timedelta):
        msg = f"{where}: {name} must be a datetime.timedelta, got {value!r}"
        raise TypeError(msg)
    seconds = value.total_seconds()
    if seconds < low:
        msg = f"{where}: {name} must be at least {low:g} s, got {value!r}"
        raise ValueError(msg)
    return seconds


@dataclass(frozen=True, kw_only=True)
class KafkaCluster:
    """Run a flow as one copy of an application that shares its work through Kafka.

    Start the same flow with the same ``app_id`` in several processes or on
    several machines: the copies join the consumer group ``app_id``; Kafka
    assigns each copy some partitions of the flow's `KafkaSource` topics
    and of the internal repartition topics, and moves them when a copy stops,
    dies or joins. Keyed state is kept per partition in changelog topics and
    restored by the copy that gets the partition. See docs/scale-out.md.

    Args:
        brokers: ``host:port`` of the bootstrap brokers.
        app_id: The application's name: the consumer group, and the prefix
            of its internal topics (``{app_id}-{step_id}-repartition``,
            ``{app_id}-{step_id}-changelog``). Letters, digits, ``.``, ``_``
            and ``-``.
        partitions: Partitions of each internal topic; ``None`` takes the
            most partitions of the flow's `KafkaSource` topics (6 when it has
            none). Fixed once the topics exist: a different count later is
            refused.
        replication_factor: Replicas of each internal topic.
        session_timeout: How long the group waits for a silent copy before
            giving its partitions to the others (Kafka's
            ``session.timeout.ms``).
        revoke_timeout: How long a copy may take, when Kafka takes its
            partitions away, to stop its work and commit; past it the work
            is cancelled without a commit (the next owner replays from the
            last commit).
        add_config: librdkafka settings for every client of the cluster
            (security, SASL...), as `KafkaSource` takes them.
    """

    brokers: tuple[str, ...]
    app_id: str
    partitions: int | None = None
    replication_factor: int = 1
    session_timeout: timedelta = timedelta(seconds=10)
    revoke_timeout: timedelta = timedelta(seconds=30)
    add_config: Mapping[str, Any] = field(default_factory=dict)

    def __init__(
        self,
        *,
        brokers: Iterable[str],
        app_id: str,
        partitions: int | None = None,
        replication_factor: int = 1,
        session_timeout: timedelta = timedelta(seconds=10),
        revoke_timeout: timedelta = timedelta(seconds=30),
        add_config: Mapping[str, Any] | None = None,
    ) -> None:
        # Checked here, where the mistake is made, with the client's own
        # checks of brokers and settings (imported late: an optional extra).
        from aiowax._connectors.kafka.config import (
            COMMON_KEYS,
            check_add_config,
            str_iterable,
        )

        where = "KafkaCluster"
        object.__setattr__(self, "brokers", tuple(str_iterable(where, "brokers", brokers)))
        if not isinstance(app_id, str):
            msg = f"{where}: app_id must be a str, got {app_id!r}"
            raise TypeError(msg)
        object.__setattr__(self, "app_id", check_topic_part("the app id", app_id))
        if partitions is not None:
            positive_int(where, "partitions", partitions)
        object.__setattr__(self, "partitions", partitions)
        positive_int(where, "replication_factor", replication_factor)
        object.__setattr__(self, "replication_factor", replication_factor)
        _seconds(where, "session_timeout", session_timeout, 1.0)
        object.__setattr__(self, "session_timeout", session_timeout)
        _seconds(where, "revoke_timeout", revoke_timeout, 0.0)
        object.__setattr__(self, "revoke_timeout", revoke_timeout)
        checked = check_add_config(where, add_config, COMMON_KEYS)
        object.__setattr__(self, "add_config", checked)

    @property
    def bootstrap(self) -> str:
        """The brokers as librdkafka's ``bootstrap.servers``."""
        return ",".join(self.brokers)

    def client_config(self) -> dict[str, Any]:
        """The settings every client of the cluster starts from."""
        return {"bootstrap.servers": self.bootstrap, **self.add_config}
