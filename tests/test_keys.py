"""Keys: the stable hash, and the rule for ``(key, value)`` items.

The item rule (`aiowax._keys.is_keyed_item`) is written inline, for speed,
in the hot loops of stateful_map, reduce, batch, the window fast path and
the key router. The flow tests below hold every one of those copies, and
the general paths that call the rule, to the same verdict.
"""

from __future__ import annotations

import collections
import enum
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock
from zlib import crc32

import pytest

from aiowax._engine.routing import KeyRouter
from aiowax._keys import (
    as_keyed_item,
    bad_item_error,
    is_keyed_item,
    key_owner,
    stable_hash,
)
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSink, TestingSource, run_main
from aiowax.window import (
    EventClockConfig,
    SessionWindow,
    SlidingWindow,
    SystemClockConfig,
    TumblingWindow,
)

Pair = collections.namedtuple("Pair", "key value")


class Text(str):
    pass


class Couple(tuple[Any, ...]):
    pass


class Region(str, enum.Enum):  # noqa: UP042 - the pre-StrEnum spelling users still have
    EU = "eu"


class Level(enum.StrEnum):
    HIGH = "high"


BAD_ITEMS: list[Any] = [
    None,
    42,
    "ab",  # two characters: unpacks, but is no pair
    ["k", 1],
    ("k",),
    ("k", 1, 2),
    (b"k", 1),
    (1, 1),
    Pair(1, "k"),
    {"k": 1, "j": 2},
    # Claim to be a tuple or a str (``__class__``) without being one, as
    # mocks and proxies do: refused like any other bad item, not crashing
    # the check (which called tuple's and str's methods on them).
    mock.NonCallableMock(spec=tuple),
    (mock.NonCallableMock(spec=str), 1),
]
#: Plain pairs, and what the reference also takes: tuple subclasses and
#: str-subclass keys, which become plain pairs of the key's str value (W5).
GOOD_ITEMS: list[Any] = [
    ("k", 1),
    ("", None),
    ("é", (1, 2)),
    ("\udcff", 0),
    (Text("t"), 1),
    Pair("p", 1),
    Couple(("c", 1)),
    (Region.EU, 1),
    (Level.HIGH, 1),
]
PLAIN_KEYS = {"k", "", "é", "\udcff", "t", "p", "c", "eu", "high"}


@pytest.mark.parametrize("item", GOOD_ITEMS, ids=repr)
def test_good_items_become_plain_pairs(item: Any) -> None:
    pair = as_keyed_item(item)
    assert pair is not None
    assert type(pair) is tuple
    assert type(pair[0]) is str
    assert pair[0] in PLAIN_KEYS
    assert is_keyed_item(pair)


def test_only_exact_pairs_take_the_fast_path() -> None:
    assert is_keyed_item(("k", 1))
    assert not is_keyed_item(Pair("k", 1))
    assert not is_keyed_item((Text("k"), 1))


@pytest.mark.parametrize("item", BAD_ITEMS, ids=repr)
def test_bad_items_fail_the_rule(item: Any) -> None:
    assert not is_keyed_item(item)
    assert as_keyed_item(item) is None


def test_a_refused_key_shows_its_type() -> None:
    assert "(a key of type bytes)" in str(bad_item_error("s", (b"k", 1)))


def test_stable_hash_is_crc32_of_utf8_with_surrogates() -> None:
    assert stable_hash("") == 0
    assert stable_hash("a") == 0xE8B7BE43
    # Lone surrogates (surrogate-escaped bytes) still hash.
    assert isinstance(stable_hash("\udcff"), int)


T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _event_clock() -> EventClockConfig:
    return EventClockConfig(lambda _v: T0, timedelta(0))


async def _async_mapper(state: Any, value: Any) -> tuple[Any, Any]:
    return state, value


#: Every keyed path: the sync hot loops (inlined rule), the window fast path
#: (tumbling and sliding), the general window path (sessions, system clock)
#: and the async path (run_per_key).
KEYED_STEPS: dict[str, Callable[[Dataflow], None]] = {
    "stateful_map": lambda f: f.stateful_map("s", lambda: None, lambda s, v: (s, v)),
    "stateful_map async": lambda f: f.stateful_map("s", lambda: None, _async_mapper),
    "reduce": lambda f: f.reduce("s", lambda a, b: a, lambda a: False),
    "batch": lambda f: f.batch("s", 10, timedelta(seconds=1)),
    "reduce_window tumbling": lambda f: f.reduce_window(
        "s", _event_clock(), TumblingWindow(timedelta(seconds=1), T0), lambda a, b: a
    ),
    "fold_window sliding": lambda f: f.fold_window(
        "s",
        _event_clock(),
        SlidingWindow(timedelta(seconds=2), timedelta(seconds=1), T0),
        list,
        lambda a, v: [*a, v],
    ),
    "collect_window session": lambda f: f.collect_window(
        "s", _event_clock(), SessionWindow(timedelta(seconds=1))
    ),
    "collect_window system clock": lambda f: f.collect_window(
        "s", SystemClockConfig(), TumblingWindow(timedelta(seconds=1), T0)
    ),
}


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("step", sorted(KEYED_STEPS))
@pytest.mark.parametrize("bad", BAD_ITEMS, ids=repr)
def test_every_keyed_path_refuses_what_the_rule_refuses(step: str, bad: Any, workers: int) -> None:
    from aiowax.testing import cluster_main

    flow = Dataflow()
    flow.input("inp", TestingSource([("a", 1), bad, ("b", 2)], batch_size=3))
    KEYED_STEPS[step](flow)
    flow.output("out", TestingSink([]))
    with pytest.raises(TypeError, match=r"needs \(key, value\) 2-tuples with a str key") as err:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)
    assert repr(bad) in str(err.value)
    assert "'s'" in str(err.value)


@pytest.mark.parametrize("step", sorted(KEYED_STEPS))
def test_every_keyed_path_takes_what_the_rule_takes(step: str) -> None:
    out: list[Any] = []
    flow = Dataflow()
    flow.input("inp", TestingSource(GOOD_ITEMS, batch_size=len(GOOD_ITEMS)))
    KEYED_STEPS[step](flow)
    flow.output("out", TestingSink(out))
    run_main(flow)
    if step != "reduce":  # incomplete accumulators are dropped at the end
        assert {key for key, _ in out} == PLAIN_KEYS
        assert {type(key) for key, _ in out} == {str}


# -- key_owner: a stable hash ----------------------------------------------------------


#: Owners computed once (CRC-32 of the UTF-8 key, modulo the worker count). If one
#: of these changes, snapshots taken by an earlier release land on the wrong worker.
PINNED_OWNERS: list[tuple[str, int, int]] = [
    ("a", 2, 1),
    ("a", 3, 0),
    ("a", 4, 3),
    ("a", 7, 4),
    ("b", 3, 2),
    ("b", 4, 1),
    ("c", 4, 3),
    ("c", 7, 0),
    ("d", 4, 0),
    ("d", 7, 2),
    ("key", 4, 1),
    ("key", 7, 5),
    ("user-42", 4, 3),
    ("ALL", 7, 6),
    ("é", 3, 2),
    ("é", 4, 2),
    ("", 4, 0),
]


@pytest.mark.parametrize(("key", "workers", "owner"), PINNED_OWNERS)
def test_key_owner_pinned(key: str, workers: int, owner: int) -> None:
    assert key_owner(key, workers) == owner


@pytest.mark.parametrize(
    ("key", "crc"),
    [("a", 3904355907), ("b", 1908338681), ("key", 2324736937), ("é", 235179326)],
)
def test_key_owner_is_crc32_of_utf8(key: str, crc: int) -> None:
    assert crc32(key.encode("utf-8")) == crc
    # A worker count above every CRC shows the raw hash.
    assert key_owner(key, 2**32) == crc
    assert key_owner(key, 2**32 + 1) == crc


def test_key_owner_one_worker_is_always_zero() -> None:
    assert {key_owner(f"k{i}", 1) for i in range(200)} == {0}


def test_key_owner_in_range_and_spread() -> None:
    for n in (2, 3, 4, 8):
        owners = [key_owner(f"key-{i}", n) for i in range(400)]
        assert set(owners) == set(range(n))


@pytest.mark.parametrize("key", ["caf\udce9", "\ud800", "a\udfffb"], ids=ascii)
def test_key_owner_takes_any_str_even_lone_surrogates(key: str) -> None:
    """A str key that is not valid UTF-8 (surrogate-escaped bytes) still has an owner.

    Such keys come from ``os.fsdecode`` and friends; one worker handles them,
    so more workers must too.
    """
    owners = {key_owner(key, 4) for _ in range(3)}
    assert len(owners) == 1
    assert owners <= {0, 1, 2, 3}
    assert KeyRouter("st", 4)([(key, 1)])[owners.pop()] == [(key, 1)]


def test_key_owner_same_in_another_process_with_another_hash_seed() -> None:
    keys = ["a", "b", "user-42", "é", "x" * 50]
    code = (
        "from aiowax._keys import key_owner;"
        f"print([key_owner(k, n) for k in {keys!r} for n in (2, 3, 4, 7)])"
    )
    expected = str([key_owner(k, n) for k in keys for n in (2, 3, 4, 7)])
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert done.stdout.strip() == expected
