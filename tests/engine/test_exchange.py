"""Items between workers in a run (`aiowax._engine.exchange`): any worker count, redistribute.

A flow gives the same output (per key, in order) with any number of
workers: the exchanges in front of keyed steps and of `redistribute` move
each item to the worker that must see it. The routers themselves are tested
in ``test_routing.py``, the alignment of epochs across senders in
``test_channels.py``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from aiowax.dataflow import Dataflow
from aiowax.testing import cluster_main
from flow_helpers import run, simple_flow

# -- the same output for any worker count ----------------------------------------------


CHAIN_ITEMS = [(f"k{(i * 5) % 11}", i) for i in range(200)]


def _add_running_sum(f: Dataflow) -> None:
    f.stateful_map("sm", lambda: 0, lambda s, x: (s + x, s + x))


def _add_reduce(f: Dataflow) -> None:
    # (count, total), complete after every third value of a key.
    f.map("one", lambda kv: (kv[0], (1, kv[1])))
    f.reduce("r", lambda a, b: (a[0] + b[0], a[1] + b[1]), lambda acc: acc[0] == 3)


def _add_batch(f: Dataflow) -> None:
    f.batch("b", 4, timedelta(hours=1))


def _add_chain(f: Dataflow) -> None:
    _add_running_sum(f)
    f.map("parity", lambda kv: (kv[0], (1, kv[1] % 2)))
    f.reduce("r", lambda a, b: (a[0] + b[0], a[1] + b[1]), lambda acc: acc[0] == 2)
    f.batch("b", 3, timedelta(hours=1))
    f.stateful_map("last", lambda: None, lambda s, x: (None if len(x) < 3 else x, (s, x)))


def _canon(items: list[Any]) -> list[Any]:
    """Sorted, whatever the item types (None and lists do not compare)."""
    return sorted(items, key=repr)


def _expected(add: Callable[[Dataflow], None]) -> list[Any]:
    """Compute the output with a plain-Python model of the operators."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for k, v in CHAIN_ITEMS:
        by_key[k].append(v)

    def running(vs: list[int]) -> list[int]:
        out, total = [], 0
        for v in vs:
            total += v
            out.append(total)
        return out

    def chunks(vs: list[Any], n: int) -> list[list[Any]]:
        return [vs[i : i + n] for i in range(0, len(vs), n)]

    out: list[Any] = []
    for k, vs in by_key.items():
        if add is _add_running_sum:
            out += [(k, s) for s in running(vs)]
        elif add is _add_reduce:
            out += [(k, (3, sum(c))) for c in chunks(vs, 3) if len(c) == 3]
        elif add is _add_batch:
            out += [(k, c) for c in chunks(vs, 4)]
        else:
            pairs = [(2, sum(s % 2 for s in c)) for c in chunks(running(vs), 2) if len(c) == 2]
            state = None
            for c in chunks(pairs, 3):
                out.append((k, (state, c)))
                state = None if len(c) < 3 else c
    return _canon(out)


CHAINS = {
    "stateful_map": _add_running_sum,
    "reduce": _add_reduce,
    "batch": _add_batch,
    "chain": _add_chain,
}


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("name", list(CHAINS))
@pytest.mark.parametrize(
    ("batch_size", "epoch_interval"),
    [(1, None), (16, None), (5, timedelta(0))],
    ids=["1", "16", "5-epoch-per-batch"],
)
async def test_same_output_for_any_worker_count_run(
    name: str, workers: int, batch_size: int, epoch_interval: timedelta | None
) -> None:
    add = CHAINS[name]
    flow, out = simple_flow(CHAIN_ITEMS, add, batch_size)
    await run(flow, workers=workers, epoch_interval=epoch_interval)
    assert _canon(out) == _expected(add)


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2, 4])
async def test_keys_that_are_not_valid_utf8_work_with_any_worker_count(workers: int) -> None:
    keys = ["caf\udce9", "\ud800", "ok", "é"]
    items = [(k, i) for i in range(3) for k in keys]
    flow, out = simple_flow(items, _add_running_sum, batch_size=4)
    await run(flow, workers=workers)
    # Running sums of 0, 1, 2 per key, in order.
    assert {k: [s for kk, s in out if kk == k] for k in keys} == {k: [0, 1, 3] for k in keys}


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("name", list(CHAINS))
def test_same_output_for_any_worker_count_cluster_main(name: str, workers: int) -> None:
    add = CHAINS[name]
    flow, out = simple_flow(CHAIN_ITEMS, add, 8)
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    assert _canon(out) == _expected(add)


def test_expected_model_is_not_trivial() -> None:
    # Guard the model itself: every chain emits something, the chain ends in
    # both kinds of state of its last step.
    for add in CHAINS.values():
        assert len(_expected(add)) > 10
    chain = _expected(_add_chain)
    assert any(s is None for _, (s, _) in chain)
    assert any(s is not None for _, (s, _) in chain)


# -- redistribute ----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("epoch_interval", [None, timedelta(0)], ids=["default", "each-batch"])
async def test_redistribute_reaches_every_worker(epoch_interval: timedelta | None) -> None:
    seen: list[tuple[int, int]] = []
    flow, out = simple_flow(
        list(range(30)),
        lambda f: (f.redistribute(), f.inspect_worker(lambda x, w: seen.append((x, w)))),
    )
    await run(flow, workers=3, epoch_interval=epoch_interval)
    assert {w for _, w in seen} == {0, 1, 2}
    assert sorted(x for x, _ in seen) == list(range(30))
    assert sorted(out) == list(range(30))


@pytest.mark.asyncio
async def test_without_redistribute_a_single_partition_stays_on_worker_zero() -> None:
    seen: list[tuple[int, int]] = []
    flow, out = simple_flow(
        list(range(30)), lambda f: f.inspect_worker(lambda x, w: seen.append((x, w)))
    )
    await run(flow, workers=3)
    assert seen == [(x, 0) for x in range(30)]
    assert out == list(range(30))


@pytest.mark.asyncio
async def test_redistribute_with_one_worker_passes_through() -> None:
    seen: list[tuple[int, int]] = []
    flow, out = simple_flow(
        list(range(10)),
        lambda f: (f.redistribute(), f.inspect_worker(lambda x, w: seen.append((x, w)))),
        batch_size=3,
    )
    await run(flow, workers=1)
    assert seen == [(x, 0) for x in range(10)]
    assert out == list(range(10))
