"""Routers (`aiowax._engine.routing`): which worker each item of a batch goes to.

`KeyRouter` sends a ``(key, value)`` item to the owner of its key (the
stable hash of `aiowax._keys`, pinned in ``tests/test_keys.py``);
`RoundRobin` spreads batches evenly over the workers for `redistribute`.
"""

from __future__ import annotations

from typing import Any

import pytest

from aiowax._engine import routing
from aiowax._engine.errors import StepFailed
from aiowax._engine.routing import KeyRouter, RoundRobin
from aiowax._keys import key_owner

# -- KeyRouter -------------------------------------------------------------------------


def test_key_router_splits_by_owner_keeping_order() -> None:
    route = KeyRouter("st", 4)
    batch = [("a", 1), ("b", 2), ("d", 3), ("a", 4), ("c", 5), ("b", 6), ("d", 7)]
    parts = route(batch)
    # a -> 3, b -> 1, c -> 3, d -> 0 (see PINNED_OWNERS).
    assert parts == [
        [("d", 3), ("d", 7)],
        [("b", 2), ("b", 6)],
        [],
        [("a", 1), ("a", 4), ("c", 5)],
    ]
    # A second batch is routed the same way (memoised owners).
    assert route([("c", 8), ("a", 9)]) == [[], [], [], [("c", 8), ("a", 9)]]


def test_key_router_one_worker_takes_everything() -> None:
    batch = [(f"k{i}", i) for i in range(20)]
    assert KeyRouter("st", 1)(batch) == [batch]


def test_key_router_memo_limit_keeps_owners_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routing, "_MEMO_LIMIT", 3)
    route = KeyRouter("st", 3)
    for round_ in range(3):
        batch = [(f"k{i}", round_) for i in range(20)]
        parts = route(batch)
        for w, part in enumerate(parts):
            assert all(key_owner(k, 3) == w for k, _ in part)
        assert sorted(x for p in parts for x in p) == sorted(batch)
    assert len(route._memo) <= 3


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        (1, 2),
        ("k", 1, 2),
        ("k",),
        ["k", 1],
        (b"k", 1),
        None,
        42,
    ],
    ids=repr,
)
def test_key_router_rejects_bad_items(bad: Any) -> None:
    route = KeyRouter("the_step", 4)
    batch = [("a", 1), ("b", 2), bad, ("d", 3)]
    with pytest.raises(StepFailed) as info:
        route(batch)
    err = info.value
    assert isinstance(err.error, TypeError)
    assert "'the_step'" in str(err.error)
    assert repr(bad) in str(err.error)
    # The items before the bad one (index 2) are routed, nothing after it.
    assert err.partial == [[], [("b", 2)], [], [("a", 1)]]
    assert sum(map(len, err.partial)) == 2


# -- RoundRobin ------------------------------------------------------------------------


def test_round_robin_even_contiguous_slices_rotating() -> None:
    rr = RoundRobin(3)
    assert rr(list(range(7))) == [[0, 1, 2], [3, 4], [5, 6]]
    # The next batch starts one worker further.
    assert rr(["x"]) == [[], ["x"], []]
    assert rr(["y"]) == [[], [], ["y"]]
    assert rr([1, 2, 3]) == [[1], [2], [3]]
    assert rr([]) == [[], [], []]


def test_round_robin_single_items_cycle_over_every_worker() -> None:
    rr = RoundRobin(4)
    owners = []
    for i in range(12):
        parts = rr([i])
        (owner,) = [w for w, p in enumerate(parts) if p]
        assert parts[owner] == [i]
        owners.append(owner)
    assert owners == [0, 1, 2, 3] * 3


@pytest.mark.parametrize("sizes", [[5, 1, 9, 3, 3, 4, 100], [1] * 10, [8, 8, 8]])
def test_round_robin_loses_nothing_and_stays_even(sizes: list[int]) -> None:
    rr = RoundRobin(4)
    counts = [0] * 4
    start = 0
    for size in sizes:
        batch = list(range(start, start + size))
        start += size
        parts = rr(batch)
        assert sorted(x for p in parts for x in p) == batch
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        for w, p in enumerate(parts):
            counts[w] += len(p)
            assert p == sorted(p)  # contiguous slices keep order
    assert sum(counts) == sum(sizes)
    assert max(counts) - min(counts) <= 2


def test_round_robin_one_worker() -> None:
    rr = RoundRobin(1)
    assert rr([1, 2, 3]) == [[1, 2, 3]]
    assert rr([4]) == [[4]]
