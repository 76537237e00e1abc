"""A copy waiting for the consumer group (`aiowax._cluster.runtime`), on the virtual clock.

No broker: the wait is driven by an event standing for the group's next
assignment, so the minutes a stuck group takes pass in virtual time.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from aiowax._cluster import runtime
from aiowax._cluster.runtime import ASSIGNMENT_PATIENCE_S, ClusterRun, wait_for_assignment
from aiowax.cluster import ClusterError, KafkaCluster

CLUSTER = KafkaCluster(brokers=["broker:9092"], app_id="orders")


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_a_copy_left_without_partitions_says_so_every_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Tansu 0.6 never assigns a group again once every member left during a
    # rebalance: a new copy waited there for good, without a word.
    control = ClusterRun()
    ready = anyio.Event()
    caplog.set_level(logging.WARNING, logger="aiowax")
    start = anyio.current_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_for_assignment, lambda: ready, control, CLUSTER)
        await anyio.sleep(150)
        ready.set()
    assert anyio.current_time() - start == pytest.approx(150)
    # The default timeouts (10 s session, 30 s revoke) plus 20 s: one minute.
    assert ASSIGNMENT_PATIENCE_S == 60
    assert [r.getMessage() for r in caplog.records] == [
        f"cluster 'orders': no partitions assigned to this copy after {s} s of waiting "
        "for the consumer group: it does no work meanwhile (a rebalance waiting for a "
        "slow member, or a broker that no longer assigns the group: see "
        "docs/scale-out.md)"
        for s in (60, 120)
    ]


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_the_patience_covers_a_slow_members_revocation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A rebalance may wait for a member's revoke_timeout: no warning before.
    cluster = KafkaCluster(
        brokers=["broker:9092"], app_id="orders", revoke_timeout=timedelta(seconds=100)
    )
    control = ClusterRun()
    ready = anyio.Event()
    caplog.set_level(logging.WARNING, logger="aiowax")
    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_for_assignment, lambda: ready, control, cluster)
        await anyio.sleep(129)
        assert caplog.records == []
        await anyio.sleep(2)
        assert len(caplog.records) == 1
        assert "after 130 s of waiting" in caplog.records[0].getMessage()
        control.request_stop()  # a stop ends the wait too


@pytest.mark.asyncio
async def test_each_assignment_checks_the_apps_topics_before_reading_its_state(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # helper-63: brokers back without their data had the app's topics made
    # anew, and the copies counted from nothing. The check itself is tested
    # on a broker (test_cluster_store.py); here, that a generation runs it
    # first, and that its refusal ends the copy's work.
    calls: list[str] = []

    class Store:
        def __init__(self, *args: Any) -> None:
            pass

        def load(self) -> Any:
            calls.append("load")
            return {}

    def check_topics(topology: Any) -> None:
        calls.append("check")
        raise ClusterError("the brokers lost the app's topics")

    topology = SimpleNamespace(cluster=CLUSTER, generation_flow=lambda assigned: object())
    control = ClusterRun()
    monkeypatch.setattr(runtime, "KafkaStore", Store)
    monkeypatch.setattr(runtime, "check_topics", check_topics)
    with pytest.raises(ClusterError, match="lost the app's topics"):
        await runtime._generation(
            topology,  # type: ignore[arg-type]
            SimpleNamespace(commit=None, committed=None),  # type: ignore[arg-type]
            control,
            1.0,
            {"orders": [0]},
        )
    assert calls == ["check"]
    assert not control.restoring
