"""The hot loop of tumbling and sliding windows on the event clock, inlined.

It applies the rules of `WindowOp._place` and `KeyState.advance` (which the
general path uses for every other case) without a method call per step of
the way: this loop is most of a window step's cost. reduce_window and
fold_window on windows a whole number of offsets long (tumbling windows and
most sliding ones) go further: a key's items in the batch's newest pane are
folded in a run (see `_Run`), with no conversion of their times to µs, no
look at the watermark and no window lookup per item. The two paths are held
to the same results by ``tests/engine/ops/test_windows_property.py``, which
runs every window operator on both against a brute-force model.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiowax._engine.errors import StepFailed
from aiowax._engine.ops.windows.state import MISSING, NO_WINDOWS
from aiowax._engine.timeutil import EPOCH, from_us
from aiowax._keys import as_keyed_item, bad_item_error

if TYPE_CHECKING:
    from aiowax._engine.ops.windows.op import WindowOp

#: The bounds of the hot window while there is none: no time is in it.
NEVER_LO = datetime.max.replace(tzinfo=UTC)
NEVER_HI = datetime.min.replace(tzinfo=UTC)

#: A run of one key's items in the hot pane of a batch (reduce_window and
#: fold_window on windows a whole number of offsets long, tumbling ones
#: included; see `_place_in_runs`): ``[acc, newest, first, state, index]``,
#: the accumulator so far of the pane's window (tumbling: ``index`` is the
#: window's) or the list of the accumulators of its windows (sliding:
#: ``index`` is the range of theirs), not yet in ``state.windows``; the
#: newest and the first item time (UTC datetimes; the first item took the
#: general path, which moved the watermark for it). While a key has a run,
#: its watermark is below the pane's end, where the oldest of those windows
#: closes: every item in the pane is on time in all of them, and only an
#: item outside it, or the end of the batch, needs the watermark, so the run
#: ends first: its accumulators go in their windows and the watermark moves
#: for its newest item, in one conversion to µs instead of one per item.
_Run = list[Any]


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
    align, length, offset, wait = op.align_us, op.length_us, op.offset_us, op.wait_us
    # reduce_window's and fold_window's accumulation is inlined too: one
    # call per item and window less (a fold's first item per window builds
    # its accumulator through `add`, which names a failing builder).
    reducer: Callable[[Any, Any], Any] | None = getattr(op, "reducer", None)
    folder: Callable[[Any, Any], Any] | None = getattr(op, "folder", None)
    if length % offset == 0 and (reducer is not None or folder is not None):
        _place_in_runs(op, batch, now, touched, reducer, folder)
        return
    keys = op.keys
    key_state = op.key_state
    dt_getter = op.dt_getter
    add = op.add
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
                # The state's windows may be a lone one (see `KeyState`).
                index = (t_us - align) // length
                if align + index * length + length > wm:
                    lone = state.one_at == index
                    acc = state.one_value if lone else windows.get(index, missing)
                    if reducer is not None:
                        acc = value if acc is missing else reducer(acc, value)
                    elif folder is not None and acc is not missing:
                        acc = folder(acc, value)
                    else:
                        acc = add(acc, value, t_us)
                    if lone:
                        state.one_value = acc
                    else:
                        state.put_window(index, acc)
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


def _place_in_runs(
    op: WindowOp,
    batch: list[Any],
    now: float,
    touched: set[str],
    reducer: Callable[[Any, Any], Any] | None,
    folder: Callable[[Any, Any], Any] | None,
) -> None:
    """`place_event_time` for reduce_window and fold_window when windows tile panes: with runs.

    Panes are the spans ``[align + p * offset, align + (p + 1) * offset)``;
    when ``length`` is a whole number of offsets (tumbling windows are one),
    every time in a pane lies in the same windows, and the oldest of them
    closes when the pane ends. The general path below is
    `place_event_time`'s; before it, an item of a key with a run (see
    `_Run`) at a time in the hot pane ``[lo_dt, hi_dt)`` (the newest pane an
    item took the general path to, ``hot``) costs two datetime comparisons,
    a dict lookup and the user's function once per window. The general path
    ends its key's run first, and starts one if the item went in every
    window of the hot pane.
    """
    keys = op.keys
    key_state = op.key_state
    dt_getter = op.dt_getter
    add = op.add
    align, offset, wait = op.align_us, op.offset_us, op.wait_us
    width = op.length_us // offset
    sliding = width > 1
    combine = reducer if reducer is not None else folder
    assert combine is not None
    touch = touched.add
    unchecked = not op.env.items_checked
    step_id = op.step_id
    # Module globals as locals: a global lookup per use adds up here.
    missing, utc, epoch, plain_datetime = MISSING, UTC, EPOCH, datetime
    no_windows = NO_WINDOWS
    now_us = op.now_us(now)
    runs: dict[str, _Run] = {}
    run_of = runs.get
    hot: int | None = None
    lo_dt, hi_dt = NEVER_LO, NEVER_HI
    try:
        for item in batch:
            # As in `place_event_time`.
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
            plain = dt.__class__ is plain_datetime and dt.tzinfo is utc
            if plain and lo_dt <= dt < hi_dt:
                run = run_of(key)
                if run is not None:
                    # The key's watermark is below the pane's end (see
                    # `_Run`): the item is on time, in each of its run's windows.
                    try:
                        if sliding:
                            accs = run[0]
                            for j in range(width):
                                accs[j] = combine(accs[j], value)
                        else:
                            run[0] = combine(run[0], value)
                    except BaseException as error:
                        raise op.fail(error) from None
                    if dt > run[1]:
                        run[1] = dt
                    continue
            if runs and key in runs:
                _end_run(runs.pop(key), now_us, wait)
            if plain:
                delta = dt - epoch
                t_us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
            else:
                t_us = op.time_of(value, dt)
            state = keys.get(key)
            if state is None:
                state = key_state(key, now, t_us)
            wm_loop = state.wm_loop
            wm = state.wm_base if wm_loop == now_us else state.wm_base + now_us - wm_loop
            pane = (t_us - align) // offset
            end = align + pane * offset + offset
            # The item's windows are ``pane - width + 1 .. pane``; the oldest
            # closes when the pane ends, and close times grow with the index.
            first = pane - width + 1
            if end > wm:
                missed = 0
            else:
                missed = min((wm - end) // offset + 1, width)
                first += missed
            windows = state.windows
            try:
                if sliding:
                    for index in range(first, pane + 1):
                        acc = windows.get(index, missing)
                        if reducer is not None:
                            windows[index] = value if acc is missing else reducer(acc, value)
                        elif acc is not missing:
                            windows[index] = combine(acc, value)
                        else:
                            windows[index] = add(acc, value, t_us)
                elif not missed:
                    # Tumbling: the one window ``pane``, maybe a lone one
                    # (see `KeyState`).
                    lone = state.one_at == pane
                    acc = state.one_value if lone else windows.get(pane, missing)
                    if reducer is not None:
                        acc = value if acc is missing else reducer(acc, value)
                    elif acc is not missing:
                        acc = combine(acc, value)
                    else:
                        acc = add(acc, value, t_us)
                    if lone:
                        state.one_value = acc
                    elif windows is not no_windows:
                        windows[pane] = acc
                    else:
                        state.put_window(pane, acc)
            except StepFailed:
                raise
            except BaseException as error:
                raise op.fail(error) from None
            if not missed:
                if plain and (hot is None or pane >= hot):
                    if pane != hot:
                        # A newer pane: the hot one now, and the runs end.
                        try:
                            lo_dt, hi_dt = from_us(end - offset), from_us(end)
                        except OverflowError:
                            lo_dt, hi_dt = NEVER_LO, NEVER_HI
                        for ended in runs.values():
                            _end_run(ended, now_us, wait)
                        runs.clear()
                        hot = pane
                    if sliding:
                        indices = range(first, pane + 1)
                        runs[key] = [[windows[i] for i in indices], dt, dt, state, indices]
                    else:
                        runs[key] = [acc, dt, dt, state, pane]
            else:
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
    finally:
        # Also when an item failed: the items before it were placed.
        for run in runs.values():
            _end_run(run, now_us, wait)


def _end_run(run: _Run, now_us: int, wait: int) -> None:
    """Put a run's accumulators in their windows and move its key's watermark (see `_Run`)."""
    acc, newest, first, state, index = run
    if index.__class__ is range:
        windows = state.windows
        for i, one in zip(index, acc, strict=True):
            windows[i] = one
    elif state.one_at == index:
        state.one_value = acc
    else:
        state.windows[index] = acc
    if newest is not first:
        # `KeyState.advance` for the newest item of the run (the first one's
        # was done when the run began); `newest` is a UTC datetime.
        delta = newest - EPOCH
        candidate = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        if wait:
            candidate -= wait
        if candidate > state.wm_base + now_us - state.wm_loop:
            state.wm_base = candidate
            state.wm_loop = now_us


def _pair(step_id: str, item: Any) -> tuple[str, Any]:
    pair = as_keyed_item(item)
    if pair is None:
        raise StepFailed(bad_item_error(step_id, item))
    return pair
