"""The hot loop of tumbling and sliding windows on the event clock, inlined.

It applies the rules of `WindowOp._place` and `KeyState.advance` (which the
general path uses for every other case) without a method call per step of
the way: this loop is most of a window step's cost. The two paths are held
to the same results by ``tests/engine/ops/test_windows_property.py``, which
runs every window operator on both against a brute-force model.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiowax._engine.errors import StepFailed
from aiowax._engine.ops.windows.state import MISSING
from aiowax._engine.timeutil import EPOCH
from aiowax._keys import as_keyed_item, bad_item_error

if TYPE_CHECKING:
    from aiowax._engine.ops.windows.op import WindowOp


def place_event_time(op: WindowOp, batch: list[Any], now: float, touched: set[str]) -> None:
    """Put every item of ``batch`` in its windows, advancing its key's watermark.

    Args:
        op: The window step (sliding or tumbling windows, event clock).
        batch: The items.
        now: The loop time of the batch.
        touched: Gets every key the batch touched (to reschedule).

    Raises:
        StepFailed: A bad item, or user code raised; the items before it
            were placed.
    """
    keys = op.keys
    key_state = op.key_state
    dt_getter = op.dt_getter
    add = op.add
    # reduce_window's and fold_window's accumulation is inlined too: one
    # call per item and window less (a fold's first item per window builds
    # its accumulator through `add`, which names a failing builder).
    reducer: Callable[[Any, Any], Any] | None = getattr(op, "reducer", None)
    folder: Callable[[Any, Any], Any] | None = getattr(op, "folder", None)
    align, length, offset, wait = op.align_us, op.length_us, op.offset_us, op.wait_us
    tumbling = length == offset
    touch = touched.add
    unchecked = not op.env.items_checked
    step_id = op.step_id
    # Module globals as locals: a global lookup per use adds up here.
    missing, utc, epoch, plain_datetime = MISSING, UTC, EPOCH, datetime
    # The batch's loop time in µs: a key's ``wm_loop`` once its watermark moved.
    now_us = op.now_us(now)
    for item in batch:
        # `aiowax._keys.is_keyed_item`, inlined in the cheapest order: an
        # exact tuple first (unpacking anything else could run user code),
        # unpacking checks the length, then the key. Other items are made
        # plain pairs by `as_keyed_item`, or refused.
        if unchecked and type(item) is not tuple:
            item = _pair(step_id, item)
        try:
            key, value = item
        except ValueError:
            raise StepFailed(bad_item_error(step_id, item)) from None
        if unchecked and type(key) is not str:
            key, value = _pair(step_id, item)
        try:
            dt = dt_getter(value)
        except BaseException as error:
            raise op.dt_failed(error) from None
        if dt.__class__ is plain_datetime and dt.tzinfo is utc:
            delta = dt - epoch
            t_us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        else:
            t_us = op.time_of(value, dt)
        state = keys.get(key)
        if state is None:
            state = key_state(key, now, t_us)
        wm_loop = state.wm_loop
        wm = state.wm_base if wm_loop == now_us else state.wm_base + now_us - wm_loop
        windows = state.windows
        missed = 0
        try:
            if tumbling:
                index = (t_us - align) // length
                if align + index * length + length > wm:
                    acc = windows.get(index, missing)
                    if reducer is not None:
                        windows[index] = value if acc is missing else reducer(acc, value)
                    elif folder is not None and acc is not missing:
                        windows[index] = folder(acc, value)
                    else:
                        windows[index] = add(acc, value, t_us)
                else:
                    missed = 1
            else:
                d = t_us - align
                first = (d - length) // offset + 1
                stop = d // offset + 1
                # Close times grow with the index: only the first window can
                # tell whether any closed, and on time (the common case) the
                # loop below needs no test per window.
                if first < stop and align + first * offset + length <= wm:
                    open_from = min((wm - align - length) // offset + 1, stop)
                    missed = open_from - first
                    first = open_from
                if reducer is not None:
                    for index in range(first, stop):
                        acc = windows.get(index, missing)
                        windows[index] = value if acc is missing else reducer(acc, value)
                elif folder is not None:
                    for index in range(first, stop):
                        acc = windows.get(index, missing)
                        windows[index] = (
                            folder(acc, value) if acc is not missing else add(acc, value, t_us)
                        )
                else:
                    for index in range(first, stop):
                        windows[index] = add(windows.get(index, missing), value, t_us)
        except StepFailed:
            raise
        except BaseException as error:
            raise op.fail(error) from None
        while missed:
            # Once per window missed, as `WindowOp._settle` does.
            op.late(key, value, t_us, wm)
            missed -= 1
        # `KeyState.advance`: the watermark moves if the item is ahead.
        candidate = t_us - wait if wait else t_us
        if candidate > wm:
            state.wm_base = candidate
            state.wm_loop = now_us
        touch(key)


def _pair(step_id: str, item: Any) -> tuple[str, Any]:
    pair = as_keyed_item(item)
    if pair is None:
        raise StepFailed(bad_item_error(step_id, item))
    return pair
