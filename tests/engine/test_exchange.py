"""Exchanges between workers: key ownership, routers, and epoch alignment in the Inlet."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any
from zlib import crc32

import anyio
import pytest

from aiowax._engine import routing
from aiowax._engine.channels import Inlet, channel
from aiowax._engine.errors import StepFailed
from aiowax._engine.messages import FAILURE, TICK, EndOfInput, EpochEnd, Message
from aiowax._engine.routing import KeyRouter, RoundRobin
from aiowax._keys import key_owner

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


# -- KeyRouter ------------------------------------------------------------------------


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


# -- RoundRobin -----------------------------------------------------------------------


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


# -- Inlet alignment --------------------------------------------------------------------


def _kind(msg: Message) -> Any:
    """A comparable view of what an Inlet hands to its step."""
    if isinstance(msg, EpochEnd):
        return ("epoch_end", msg.epoch)
    if isinstance(msg, EndOfInput):
        return ("end",)
    if msg is FAILURE:
        return ("failure",)
    if msg is TICK:
        return ("tick",)
    return msg


async def _drain(inlet: Inlet) -> list[Any]:
    out = []
    try:
        with anyio.fail_after(2):
            async for msg in inlet:
                out.append(_kind(msg))
                if isinstance(msg, EndOfInput):
                    break
    finally:
        inlet.close()
    return out


def _pipe(capacity: int, senders: int) -> tuple[Any, Inlet]:
    """A channel's first sender (``send_nowait``, ``close``) and an Inlet on it.

    Works whether `channel` gives ``(send, receive)`` or, with a doorbell for
    the idle receiver, ``(send, receive, bell)``.
    """
    made = channel(capacity)
    if len(made) == 3:
        send, receive, bell = made
        return send, Inlet(receive, bell, senders)
    send, receive = made
    return send, Inlet(receive, senders)


def _feed(messages: list[Message], senders: int) -> Inlet:
    send, inlet = _pipe(len(messages) + 1, senders)
    for msg in messages:
        send.send_nowait(msg)
    send.close()
    return inlet


@pytest.mark.asyncio
async def test_inlet_holds_back_sender_that_is_ahead() -> None:
    inlet = _feed(
        [
            (0, ["a1"]),
            EpochEnd(1, 0),
            (0, ["a2"]),  # sender 0 is in epoch 2 already: held back
            (1, ["b1"]),  # sender 1 still in epoch 1: passes
            EpochEnd(1, 1),  # epoch 1 aligned: a2 is released after the marker
            (1, ["b2"]),
            EndOfInput(0),
            EndOfInput(1),
        ],
        senders=2,
    )
    assert await _drain(inlet) == [
        ["a1"],
        ["b1"],
        ("epoch_end", 1),
        ["a2"],
        ["b2"],
        ("end",),
    ]


@pytest.mark.asyncio
async def test_inlet_sender_two_epochs_ahead() -> None:
    inlet = _feed(
        [
            (0, ["a1"]),
            EpochEnd(1, 0),
            (0, ["a2"]),
            EpochEnd(2, 0),
            (0, ["a3"]),
            EndOfInput(0),
            (1, ["b1"]),
            EpochEnd(1, 1),  # releases a2; a3 waits for epoch 2
            (1, ["b2"]),
            EpochEnd(2, 1),  # releases a3 and sender 0's end
            (1, ["b3"]),
            EndOfInput(1),
        ],
        senders=2,
    )
    assert await _drain(inlet) == [
        ["a1"],
        ["b1"],
        ("epoch_end", 1),
        ["a2"],
        ["b2"],
        ("epoch_end", 2),
        ["a3"],
        ["b3"],
        ("end",),
    ]


@pytest.mark.asyncio
async def test_inlet_sender_ending_releases_the_one_ahead() -> None:
    inlet = _feed(
        [
            EpochEnd(1, 0),
            (0, ["a2"]),
            (1, ["b1"]),
            EndOfInput(1),  # sender 1 ends inside epoch 1: only sender 0 is left
            (0, ["a2bis"]),
            EndOfInput(0),
        ],
        senders=2,
    )
    assert await _drain(inlet) == [
        ["b1"],
        ("epoch_end", 1),
        ["a2"],
        ["a2bis"],
        ("end",),
    ]


@pytest.mark.asyncio
async def test_inlet_three_senders_align_on_the_slowest() -> None:
    inlet = _feed(
        [
            EpochEnd(1, 0),
            (0, ["x"]),
            EpochEnd(1, 1),
            (1, ["y"]),
            (2, ["z1"]),
            EpochEnd(1, 2),
            (2, ["z2"]),
            EndOfInput(0),
            EndOfInput(1),
            EndOfInput(2),
        ],
        senders=3,
    )
    out = await _drain(inlet)
    assert out[:2] == [["z1"], ("epoch_end", 1)]
    # After the marker, the released data of senders 0 and 1, then sender 2's.
    assert sorted(map(tuple, out[2:5])) == [("x",), ("y",), ("z2",)]
    assert out[5:] == [("end",)]


@pytest.mark.asyncio
async def test_inlet_failure_and_tick_pass_at_once() -> None:
    """A tick passes at once; a failure first releases what was held back.

    Data a sender sent before a failure must reach the sinks, even if the
    epoch alignment was holding it back.
    """
    inlet = _feed(
        [EpochEnd(1, 0), (0, ["held"]), TICK, FAILURE, (1, ["b"])],
        senders=2,
    )
    try:
        with anyio.fail_after(2):
            out = [_kind(await inlet.__anext__()) for _ in range(3)]
    finally:
        inlet.close()
    assert out == [("tick",), ["held"], ("failure",)]


@pytest.mark.asyncio
@pytest.mark.parametrize("pending", [[], [[1]], [(0, [1])]], ids=["empty", "list", "tagged"])
async def test_inlet_stops_iterating_when_senders_close(pending: list[Message]) -> None:
    """Every sender closed its stream without an end marker: the iteration ends.

    (A sender stops that way when a downstream worker it also feeds is gone.)
    """
    inlet = _feed(pending, senders=1)
    out: list[Any] = []
    try:
        with anyio.fail_after(2):
            async for msg in inlet:
                out.append(_kind(msg))
    finally:
        inlet.close()
    assert out == [[1] for _ in pending]


@pytest.mark.asyncio
async def test_inlet_end_of_input_waits_for_every_sender() -> None:
    inlet = _feed([EndOfInput(1), (0, ["a"]), EndOfInput(0)], senders=2)
    assert await _drain(inlet) == [["a"], ("end",)]


@pytest.mark.asyncio
async def test_inlet_take_ready_skips_held_back_data_and_stops_at_markers() -> None:
    send, inlet = _pipe(16, 2)
    try:
        await _take_ready_steps(send, inlet)
    finally:
        send.close()
        inlet.close()


async def _take_ready_steps(send: Any, inlet: Inlet) -> None:
    for msg in [
        (0, ["a1"]),
        EpochEnd(1, 0),
        (0, ["a2"]),
        (1, ["b1"]),
        (1, ["b2"]),
        EpochEnd(1, 1),
        (1, ["b3"]),
    ]:
        send.send_nowait(msg)
    with anyio.fail_after(2):
        assert await inlet.__anext__() == ["a1"]
        # take_ready never goes past a marker: sender 0's epoch end stays first.
        assert inlet.take_ready(100) == []
        # The step reads it (nothing to show yet: epoch 1 is not aligned), holds
        # a2 back as sender 0 is ahead, and returns b1.
        assert await inlet.__anext__() == ["b1"]
        assert inlet.take_ready(100) == [["b2"]]
        assert _kind(await inlet.__anext__()) == ("epoch_end", 1)
        # a2 is released after the aligned marker, ahead of what came later.
        assert inlet.take_ready(100) == [["a2"], ["b3"]]
        assert inlet.take_ready(100) == []
        send.send_nowait(EndOfInput(0))
        send.send_nowait(EndOfInput(1))
        assert _kind(await inlet.__anext__()) == ("end",)


@pytest.mark.asyncio
async def test_inlet_take_ready_respects_limit() -> None:
    inlet = _feed([[1, 2], [3, 4], [5], [6]], senders=1)
    try:
        assert inlet.take_ready(3) == [[1, 2], [3, 4]]
        assert inlet.take_ready(1) == [[5]]
        assert inlet.take_ready(10) == [[6]]
        assert inlet.take_ready(10) == []
    finally:
        inlet.close()


@pytest.mark.asyncio
async def test_inlet_plain_batches_from_one_sender() -> None:
    inlet = _feed([[1], EpochEnd(1, 0), [2], EndOfInput(0)], senders=1)
    assert await _drain(inlet) == [[1], ("epoch_end", 1), [2], ("end",)]
