"""Channels between step tasks (`aiowax._engine.channels`): Inlet alignment, the epoch barrier.

An `Inlet` holds back what a sender sends after an epoch marker until every
sender has sent that marker, passes ticks at once, releases what it held
back before a failure, and ends when every sender has. The `EpochBarrier`
of the source lanes counts a lane as arrived only while it waits.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from aiowax._engine.channels import AHEAD_LIMIT, EpochBarrier, Inlet, channel
from aiowax._engine.errors import DownstreamGone
from aiowax._engine.exchange import InProcessExchange
from aiowax._engine.messages import FAILURE, TICK, EndOfInput, EpochEnd, Message

# -- Inlet alignment -------------------------------------------------------------------


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


# -- EpochBarrier ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_cancelled_barrier_waiter_no_longer_counts_as_arrived() -> None:
    barrier = EpochBarrier(3)
    passed: list[str] = []
    scope = anyio.CancelScope()

    async def first() -> None:
        with scope:
            await barrier.wait()

    async def second() -> None:
        await barrier.wait()
        passed.append("second")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(first)
            await anyio.wait_all_tasks_blocked()
            scope.cancel()
            await anyio.wait_all_tasks_blocked()
            barrier.leave()  # the first lane ends
            tg.start_soon(second)
            await anyio.wait_all_tasks_blocked()
            assert passed == []  # the third lane has not arrived yet
            tg.cancel_scope.cancel()


@pytest.mark.asyncio
async def test_a_sender_ahead_waits_once_the_inlet_holds_its_share() -> None:
    # The inlet holds back what a sender ahead sends (it closed an epoch the
    # others have not) outside the channel's bound. With a fast worker and a
    # slow one, that held data grew with rate x epoch length (744,000 items,
    # 112 MB, in the report): the sender ahead now waits after AHEAD_LIMIT
    # messages until the epoch is aligned. That wait is back-pressure, in
    # blocked_s as a wait for room is (a step's busy time is what is left:
    # a trivial map ahead of a slow keyed step looked busy all that time).
    exchange = InProcessExchange(2, 1, lambda batch: [batch, []])
    fast, slow = exchange.outlet(0), exchange.outlet(1)
    inlets = [exchange.inlet(0), exchange.inlet(1)]
    exchange.seal()
    got: list[Any] = []
    sent = 0

    async def read() -> None:
        async for msg in inlets[0]:
            if isinstance(msg, EndOfInput):
                break
            got.append(msg if isinstance(msg, list) else ("epoch_end", msg.epoch))

    async def send_ahead() -> None:
        nonlocal sent
        await fast.epoch_end(1)
        for i in range(3 * AHEAD_LIMIT):
            await fast.send([i])
            sent += 1

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            tg.start_soon(send_ahead)
            await anyio.wait_all_tasks_blocked()
            assert sent == AHEAD_LIMIT  # waits: the inlet holds AHEAD_LIMIT of its batches
            assert got == []
            # With room in the channel: the wait in progress is counted, and grows.
            first = fast.blocked_s
            assert 0 < first < fast.blocked_s
            await slow.epoch_end(1)
            await anyio.wait_all_tasks_blocked()
            assert sent == 3 * AHEAD_LIMIT
            done = fast.blocked_s
            assert done > first
            assert fast.blocked_s == done  # let go: no wait in progress
            for outlet in (fast, slow):
                await outlet.end_of_input()
                outlet.close()
    for inlet in inlets:
        inlet.close()
    assert got == [("epoch_end", 1)] + [[i] for i in range(3 * AHEAD_LIMIT)]


@pytest.mark.asyncio
async def test_a_sender_ahead_is_let_go_when_the_inlet_closes() -> None:
    exchange = InProcessExchange(1, 1, lambda batch: [batch])
    fast, slow = exchange.outlet(0), exchange.outlet(0)
    inlet = exchange.inlet(0)
    exchange.seal()

    async def read() -> None:
        async for _ in inlet:
            pass

    async def send_ahead() -> None:
        await fast.epoch_end(1)
        with pytest.raises(DownstreamGone):  # told, not left waiting
            for i in range(2 * AHEAD_LIMIT):
                await fast.send([i])

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(send_ahead)
            async with anyio.create_task_group() as reading:
                reading.start_soon(read)
                await anyio.wait_all_tasks_blocked()
                reading.cancel_scope.cancel()
            inlet.close()  # the step went away
    fast.close()
    slow.close()
