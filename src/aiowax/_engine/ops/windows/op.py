"""`WindowOp`: what the three window operators share.

A window closes once its key's watermark reaches its close time; the step
keeps one timer entry per key (the keys due at each loop-clock deadline,
and a heap of those deadlines) so a window closes on time even if no item
of its key ever comes again. Items enter through the general path here
(sessions, the system clock, async user code) or through `fast_path`
(tumbling and sliding windows on the event clock, with sync user code).

The step's tables give their memory back when keys end (`compacted`), and
a key's state is kept small (`state.KeyState`): a step may hold one for each
of 100,000s of keys.
"""

from __future__ import annotations

import heapq
import inspect
import logging
from collections.abc import Callable, Collection, Generator
from contextlib import closing
from datetime import datetime
from inspect import isawaitable
from itertools import islice
from typing import Any

from aiowax._checks import describe
from aiowax._definition.steps import WindowStep
from aiowax._definition.window import (
    EventClockConfig,
    SessionWindow,
    SlidingWindow,
    WindowMetadata,
)
from aiowax._engine.errors import StepFailed, fail
from aiowax._engine.ops.base import StepEnv, TimedOp
from aiowax._engine.ops.keyed import KeyedOp, compacted
from aiowax._engine.ops.windows import recovery
from aiowax._engine.ops.windows.fast_path import place_event_time
from aiowax._engine.ops.windows.state import (
    FORGOTTEN_WATERMARKS,
    MISSING,
    Folded,
    KeyState,
    Session,
    due_keys,
    loop_us,
)
from aiowax._engine.ops.windows.ticks import (
    clamped,
    metadata,
    session_meta,
    tick_sessions,
    tick_windows,
)
from aiowax._engine.timeutil import US, from_us, to_us
from aiowax._engine.usercode import NO_OUTPUT, run_per_key
from aiowax._util import is_async_callable

logger = logging.getLogger("aiowax.window")

#: Most keys a stats call looks at (the newest); beyond, open windows are estimated.
STATS_KEYS = 10_000
#: Items a key's only session holds before they are folded into one entry
#: (`state.Folded`): a key that never pauses for ``gap`` would otherwise
#: keep every item it sends until its session closes.
COMPACT_ITEMS = 64
#: The length of a session's list that holds `COMPACT_ITEMS` items.
COMPACT_LEN = 2 + 3 * COMPACT_ITEMS

#: Most keys whose windows or sessions a tick closes, with sync user code
#: on the event clock (twice the items of the batch after one, if more): the
#: rest go in the next tick, which comes at once, behind the batches already
#: waiting. A key's windows are the same whenever they close (its watermark
#: says which are due), but a tick's output is held all at once: windows
#: that come due faster than a step closes them (a second of sessions that
#: all opened in a burst, the same window of a million keys) would make one
#: tick hold 100,000s of results, and keep the step from taking items
#: meanwhile (issue 16). Twice the batch: the step closes faster than it
#: takes items.
CLOSE_PER_TICK = 4096


def _fold_start(session: Session) -> tuple[Any, int]:
    """Where folding a session's items starts: its `Folded` entry's accumulator, or nothing."""
    first = session[4]
    if type(first) is Folded:
        return first.acc, 5
    return MISSING, 2


class WindowOp(KeyedOp, TimedOp):
    """The engine side of the three window operators.

    Subclasses say how values accumulate: `add` for sliding windows (eager),
    `finish` for the emitted value, and `combine` for sessions (which keep
    raw values until they close, so that a bridging item can merge two
    sessions without losing either).
    """

    def __init__(self, step: WindowStep, env: StepEnv) -> None:
        super().__init__(step, env)
        self.clock_config = step.clock_config
        window = step.window_config
        self.emit_metadata = step.emit_metadata
        self.event_time = isinstance(self.clock_config, EventClockConfig)
        self.on_late: Callable[..., Any] | None = None
        if isinstance(self.clock_config, EventClockConfig):
            self.dt_getter: Callable[[Any], Any] = self.clock_config.dt_getter
            self.wait_us = self.clock_config.wait_for_system_duration // US
            self.on_late = self.clock_config.on_late
        else:
            self.wait_us = 0
        self.session = isinstance(window, SessionWindow)
        #: Not tumbling (a time may be in several windows, or none): each
        #: state has a dict of windows of its own (see `KeyState`).
        self.sliding = False
        if isinstance(window, SessionWindow):
            self.gap_us: int = window.gap // US
        else:
            assert isinstance(window, SlidingWindow)
            self.length_us = window.length // US
            self.offset_us = window.offset // US
            self.align_us = to_us(window.align_to)
            self.sliding = self.length_us != self.offset_us
        self.keys: dict[str, KeyState] = {}
        # Keys whose windows all closed keep only their watermark (see
        # `KeyState.forgotten`), so it never goes back and a late item of a
        # forgotten key is still caught; the oldest are dropped past a bound
        # (a dict keeps insertion order: the oldest come first).
        self.forgotten: dict[str, int] = {}
        # The keys due at each deadline (loop time), in the order they were
        # scheduled, and a heap of those deadlines. Keys share a deadline
        # more often than not (in-order sessions: every key of a batch); a
        # deadline of one key holds the key itself, not a list of it (64
        # bytes less: tumbling windows' deadlines follow each key's own
        # watermark). See `due_keys`.
        self.timers: dict[float, list[str] | str] = {}
        self.heap: list[float] = []
        # The most entries these two held lately (see `compacted`).
        self._keys_peak = self._timers_peak = 0
        # The last loop time seen, and `loop_us` of it: one int for every
        # key of a batch (a watermark's ``wm_loop``).
        self._now, self._now_us = -1.0, loop_us(-1.0)
        #: The system clock's watermark, one for every key: the newest wall
        #: time seen, advancing with the loop clock. It never goes back, so
        #: a window emitted before the wall clock steps back (an NTP step, a
        #: VM resume) is not opened again (issue 11, W4). None: no item yet.
        self.system_wm: KeyState | None = None
        #: Items dropped because their window had already closed, once for
        #: each window an item missed (a sliding window's item can miss some
        #: of its windows and not others).
        self.late_count = 0
        # Until an accumulator was seen: see `_probe`. Sessions keep raw
        # values until they close: on_tick looks at what they give.
        self._probing = not self.session
        # For the ticks (`ticks`): the operator's own finish (None: the
        # accumulator is the value), and whether a one-item session's value
        # is ``finish(add(MISSING, value))`` (see `combine`).
        self.own_finish = None if type(self).finish is WindowOp.finish else self.finish
        self.lone_combine = type(self).combine is WindowOp.combine
        self.is_async = self._user_async() or (
            self.event_time and is_async_callable(self.dt_getter)
        )
        # A key's only session folds its items every `COMPACT_ITEMS` (see
        # `state.Folded`), where sessions fold their items in `combine` and
        # the user's code is sync (folding happens as items are placed).
        self.compacts = self.session and self.lone_combine and not self.is_async

    # -- what subclasses define ---------------------------------------------

    def _user_async(self) -> bool:
        return False

    def add(self, acc: Any, value: Any, t_us: int) -> Any:
        """Fold ``value`` (at time ``t_us``) into an accumulator or `MISSING`."""
        raise NotImplementedError

    async def aadd(self, acc: Any, value: Any, t_us: int) -> Any:
        return self.add(acc, value, t_us)

    def finish(self, acc: Any) -> Any:
        return acc

    def combine(self, session: Session) -> Any:
        """A closed session's value (see `state.Session`: its items are in arrival order)."""
        return self.finish(self.fold(session))

    def fold(self, session: Session) -> Any:
        """The accumulator of a session's items, from its `Folded` first entry if it has one."""
        acc, start = _fold_start(session)
        for i in range(start, len(session), 3):
            acc = self.add(acc, session[i + 2], session[i])
        return acc

    async def acombine(self, session: Session) -> Any:
        acc, start = _fold_start(session)
        for i in range(start, len(session), 3):
            acc = await self.aadd(acc, session[i + 2], session[i])
        return self.finish(acc)

    def compact(self, session: Session) -> None:
        """Fold the items of a key's only session into one `Folded` entry (see there)."""
        acc = self.fold(session)
        t_us, seq = session[-3], session[-2]
        del session[2:]
        session += (t_us, seq, Folded(acc))

    # -- items ----------------------------------------------------------------

    def state_size(self) -> int:
        """Keys with open windows (the memo of forgotten watermarks aside)."""
        return len(self.keys)

    def stats_extra(self, loop_now: float, wall_us: int) -> dict[str, Any]:
        keys = self.keys
        # Looked at from the newest keys back, at most STATS_KEYS of them:
        # a poll a second must not walk a million keys.
        seen = list(islice(reversed(keys.values()), STATS_KEYS))
        if self.event_time:
            marks = [state.watermark(loop_now) for state in seen]
        elif self.system_wm is not None:
            marks = [self.system_wm.watermark(loop_now)]
        else:
            marks = []
        opened = sum(st.open_count() for st in seen)
        if len(seen) < len(keys):
            opened = round(opened * len(keys) / len(seen))
        extra: dict[str, Any] = {"keys": len(keys), "late": self.late_count, "windows_open": opened}
        if marks:
            newest = max(marks)
            extra["watermark"] = clamped(newest)
            extra["watermark_lag_s"] = max(0.0, (wall_us - newest) / 1e6)
        return extra

    def time_of(self, value: Any, dt: Any) -> int:
        """The microseconds of ``dt``, the time ``dt_getter`` gave for ``value``."""
        if not isinstance(dt, datetime):
            if isawaitable(dt):
                raise self.returned_awaitable("dt_getter", dt)
            raise self.type_error("dt_getter must return a datetime", dt, f" for {describe(value)}")
        if dt.tzinfo is None or dt.utcoffset() is None:
            msg = (
                f"{self.step.kind} step {self.step_id!r}: dt_getter returned the naive datetime "
                f"{dt!r}; return a timezone-aware one (e.g. tzinfo=timezone.utc)"
            )
            raise StepFailed(TypeError(msg))
        return to_us(dt)

    def dt_failed(self, error: BaseException) -> StepFailed:
        return fail(error, self.step_id, f"{self.step.kind} dt_getter")

    def now_us(self, now: float) -> int:
        """``loop_us(now)``: the same int object for every key of a batch."""
        if now != self._now:
            self._now, self._now_us = now, loop_us(now)
        return self._now_us

    def key_state(self, key: str, now: float, t_us: int) -> KeyState:
        """The state of ``key``, made (or brought back from the memo) if need be."""
        state = self.keys.get(key)
        if state is None:
            kept = self.forgotten.pop(key, None)
            if kept is not None:
                state = KeyState(kept, 0)
            elif self.system_wm is not None:
                # On the system clock a new key starts at the step's
                # watermark: its windows that time has passed were closed
                # (and maybe emitted) for it too.
                state = KeyState(self.system_wm.wm_base, self.system_wm.wm_loop)
            else:
                wait = self.wait_us
                state = KeyState(t_us - wait if wait else t_us, self.now_us(now))
            if self.sliding:
                # Its own dict, which the hot loops write (see `KeyState`).
                state.windows = {}
            self.keys[key] = state
        return state

    def system_time(self, now: float) -> int:
        """The wall time of a batch (system clock), advancing the step's watermark.

        An item's time on the system clock is this, or its key's watermark
        when that is ahead: a watermark moves with the event loop's clock
        while its key is idle, and the wall clock may read behind it (the two
        clocks drift apart by microseconds to milliseconds; the wall clock
        may step back). Never behind the watermark, an item is never late:
        it goes in the window open now, none is emitted twice, none dropped.
        """
        sys_us = to_us(self.clock.now())
        if self.system_wm is None:
            self.system_wm = KeyState(sys_us, self.now_us(now))
        else:
            self.system_wm.advance(self.now_us(now), sys_us, 0)
        return sys_us

    def late(self, key: str, value: Any, t_us: int, wm: int) -> None:
        """Count, log and report an item that missed one of its windows.

        Called once for each window missed: a sliding window's item late for
        two of its windows is reported twice, and one late for some but not
        all is reported too (it is placed in the open ones).
        """
        self.late_count += 1
        logger.debug(
            "step %r dropped a late item of key %r at %s from a window that closed"
            " (watermark %s): %r",
            self.step_id,
            key,
            from_us(t_us),
            clamped(wm),
            value,
        )
        if self.on_late is not None:
            try:
                self.on_late(key, value, from_us(t_us), clamped(wm))
            except BaseException as error:
                raise fail(error, self.step_id, f"{self.step.kind} on_late hook") from None

    def _windows_of(self, t_us: int) -> range:
        d = t_us - self.align_us
        return range((d - self.length_us) // self.offset_us + 1, d // self.offset_us + 1)

    def _close_of(self, index: int) -> int:
        return self.align_us + index * self.offset_us + self.length_us

    def _open_windows_of(self, t_us: int, wm: int) -> tuple[range, int]:
        """The windows of ``t_us`` still open at ``wm``, and how many closed.

        Close times grow with the window index, so the closed ones are the
        first of the item's windows. A time in the gap between windows
        (offset > length) belongs to no window: dropping it is what the
        configuration asks, not lateness.
        """
        indices = self._windows_of(t_us)
        first_open = max(indices.start, (wm - self.align_us - self.length_us) // self.offset_us + 1)
        first_open = min(first_open, indices.stop)
        return range(first_open, indices.stop), first_open - indices.start

    def _locate(self, key: str, now: float, t_us: int) -> tuple[KeyState, int, int, int]:
        """Where an item at ``t_us`` goes: its key's state, time and watermark.

        Also the least time on time: the watermark, but for sessions on the
        event clock see `_session_state`. On the system clock an item's time
        is never behind its key's watermark (see `system_time`).
        """
        if self.event_time and self.session:
            state, wm, on_time = self._session_state(key, now, t_us)
            return state, t_us, wm, on_time
        state = self.key_state(key, now, t_us)
        wm = state.watermark(now)
        if t_us < wm and not self.event_time:
            t_us = wm
        return state, t_us, wm, wm

    def _session_state(self, key: str, now: float, t_us: int) -> tuple[KeyState, int, int]:
        """The state of ``key``, its watermark, and the least item time on time.

        A session's item is late when its time is before its key's
        watermark, which moves on with the clock from the moment the item
        that set it was seen: by the time a second item is seen, some time
        has passed, so an item exactly at the watermark is late too. All
        items of a batch are stamped with one loop time, though, so whether
        time had passed would depend on how the input was split into
        batches: it is taken as passed, whatever the split (as in Bytewax
        0.17.2, whose clock moves between any two items). The item that
        makes a new key's state sets its watermark (its time less the wait)
        and is judged against none: it is never late.
        """
        state = self.keys.get(key)
        if state is None:
            kept = self.forgotten.pop(key, None)
            if kept is None:
                wait = self.wait_us
                state = KeyState(t_us - wait if wait else t_us, self.now_us(now))
                self.keys[key] = state
                return state, state.wm_base, t_us
            state = self.keys[key] = KeyState(kept, 0)
        wm = state.watermark(now)
        return state, wm, wm + 1

    def _place(self, state: KeyState, value: Any, t_us: int, wm: int) -> int:
        """Put one item in its open windows; the number of windows it missed.

        For sessions on the event clock, ``wm`` is the least time on time
        (see `_session_state`). `fast_path.place_event_time` applies the
        same rules, inlined.
        """
        if self.session:
            if t_us < wm:
                return 1
            state.join_session(self.gap_us, t_us, value)
            if self.compacts:
                sessions = state.sessions
                if len(sessions) == 1 and len(sessions[0]) > COMPACT_LEN:
                    self.compact(sessions[0])
            return 0
        indices, missed = self._open_windows_of(t_us, wm)
        for index in indices:
            state.put_window(index, self.add(state.get_window(index, MISSING), value, t_us))
        return missed

    def process(self, batch: list[Any]) -> list[Any]:
        now = self.now()
        touched: set[str] = set()
        try:
            if self.event_time and not self.session:
                place_event_time(self, batch, now, touched)
            else:
                self._place_each(batch, now, touched)
            if self._probing and touched:
                self._probe(touched)
        except StepFailed as failed:
            # Windows the items before the failure closed still go out.
            self.reschedule(touched, now)
            failed.partial = self.on_tick(len(batch))
            raise
        self.reschedule(touched, now)
        return self.on_tick(len(batch))

    def _dt(self, value: Any) -> Any:
        """``dt_getter(value)`` (maybe an awaitable), naming the step if it raises."""
        try:
            return self.dt_getter(value)
        except BaseException as error:
            raise self.dt_failed(error) from None

    def _settle(
        self, key: str, value: Any, state: KeyState, now: float, t_us: int, wm: int, missed: int
    ) -> None:
        """An item was placed in its open windows, missing ``missed``: move the watermark."""
        for _ in range(missed):
            self.late(key, value, t_us, wm)
        state.advance(self.now_us(now), t_us, self.wait_us)

    def _place_each(self, batch: list[Any], now: float, touched: set[str]) -> None:
        """Sessions and the system clock: one item at a time."""
        sys_us = 0 if self.event_time else self.system_time(now)
        for item in batch:
            key, value = self._pair(item)
            t_us = self.time_of(value, self._dt(value)) if self.event_time else sys_us
            state, t_us, wm, on_time = self._locate(key, now, t_us)
            try:
                missed = self._place(state, value, t_us, on_time)
            except StepFailed:
                raise
            except BaseException as error:
                raise self.fail(error) from None
            self._settle(key, value, state, now, t_us, wm, missed)
            touched.add(key)

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        now = self.now()
        sys_us = 0 if self.event_time else self.system_time(now)
        touched: set[str] = set()

        async def one(key: str, value: Any) -> Any:
            t_us = sys_us
            if self.event_time:
                dt = self._dt(value)
                if inspect.isawaitable(dt):
                    try:
                        dt = await dt
                    except BaseException as error:
                        raise self.dt_failed(error) from None
                t_us = self.time_of(value, dt)
            state, t_us, wm, on_time = self._locate(key, now, t_us)
            if self.session:
                missed = 1 if t_us < on_time else 0
                if not missed:
                    state.join_session(self.gap_us, t_us, value)
            else:
                indices, missed = self._open_windows_of(t_us, wm)
                for index in indices:
                    try:
                        acc = await self.aadd(state.get_window(index, MISSING), value, t_us)
                    except BaseException as error:
                        raise self.fail(error) from None
                    state.put_window(index, acc)
            self._settle(key, value, state, now, t_us, wm, missed)
            touched.add(key)
            return NO_OUTPUT

        try:
            await run_per_key(self.step_id, batch, one, self.limit)
        except StepFailed as failed:
            self.reschedule(touched, now)
            failed.partial = await self.atick()
            raise
        self.reschedule(touched, now)
        return await self.atick()

    # -- closing ----------------------------------------------------------------

    def reschedule(self, keys: Collection[str], now: float) -> None:
        if self.dirty is not None:
            self.dirty.update(keys)
        states = self.keys
        if len(states) > self._keys_peak:
            self._keys_peak = len(states)
        timers, heap = self.timers, self.heap
        session, gap = self.session, self.gap_us if self.session else 0
        if not session:
            align, offset, length = self.align_us, self.offset_us, self.length_us
        forget = self.event_time
        forgotten = self.forgotten
        shared: float | None = None
        for key in keys:
            state = states.get(key)
            if state is None:
                continue
            # The earliest close time of the key's open windows (None: none
            # open). Sessions: the first one ends first (its last item + gap).
            if session:
                first = state.one_at
                if first is None and state.sessions:
                    first = state.sessions[0][1]
                if first is not None:
                    first += gap
            else:
                # Close times grow with the window index.
                index = state.first_window()
                first = None if index is None else align + index * offset + length
            if first is None:
                del states[key]
                if forget:
                    forgotten[key] = state.wm_base - state.wm_loop  # `_forget`, inlined
                    if len(forgotten) > FORGOTTEN_WATERMARKS:
                        self._forget_oldest()
                        forgotten = self.forgotten
                continue
            deadline = (first - state.wm_base + state.wm_loop) / 1e6  # state.deadline_of(first)
            # Only an earlier deadline needs a new timer entry: the watermark
            # moves every batch, and a later one is found when the entry
            # already there comes due (then the key is rescheduled).
            if state.deadline is None or deadline < state.deadline:
                if deadline == shared:
                    deadline = shared  # one float for the keys due together
                shared = state.deadline = deadline
                due = timers.get(deadline)
                if due is not None:
                    if isinstance(due, str):
                        timers[deadline] = [due, key]
                    else:
                        due.append(key)
                    continue
                timers[deadline] = key
                if not heap or deadline < heap[0]:
                    self.timer.rearm()
                heapq.heappush(heap, deadline)
        self.keys, self._keys_peak = compacted(states, self._keys_peak)
        self.timers, self._timers_peak = compacted(timers, self._timers_peak)

    def _forget(self, key: str, state: KeyState) -> None:
        """Drop a key's state, keeping its watermark in the memo (`reschedule` inlines it)."""
        self.forgotten[key] = state.forgotten()
        if len(self.forgotten) > FORGOTTEN_WATERMARKS:
            self._forget_oldest()

    def _forget_oldest(self) -> None:
        """The memo is past its bound: the oldest eighth goes."""
        forgotten = self.forgotten
        if len(forgotten) > FORGOTTEN_WATERMARKS:
            # The oldest eighth goes at once, and the memo is rebuilt: a dict
            # pops its oldest key in O(1) only until a resize, and the new
            # one holds no room left by the keys gone.
            items = iter(forgotten.items())
            excess = len(forgotten) - FORGOTTEN_WATERMARKS + FORGOTTEN_WATERMARKS // 8
            dropped = [key for key, _ in islice(items, excess)]
            self.forgotten = dict(items)
            if self.dirty is not None:
                self.dirty.update(dropped)

    def next_deadline(self) -> float | None:
        return self.heap[0] if self.heap else None

    def window_meta(self, index: int) -> WindowMetadata:
        """The metadata of window ``index`` (sliding and tumbling windows)."""
        open_us = self.align_us + index * self.offset_us
        return metadata(clamped(open_us), clamped(open_us + self.length_us))

    def _closing(self) -> Generator[tuple[str, WindowMetadata, Any, bool], None, None]:
        """Take out every window that is due: ``(key, meta, payload, is_session)``.

        The payload is a sliding window's accumulator, or a session (see
        `state.Session`). One at a time: a tick that closes 100,000 windows
        holds their output, not also a list of what it took out. Once
        iterated over or closed, the keys touched are rescheduled.
        """
        now = self.now()
        # In the order they close (a dict), so the memo forgets the oldest first.
        keys: dict[str, None] = {}
        heap, timers, states = self.heap, self.timers, self.keys
        gap = self.gap_us if self.session else 0
        try:
            while heap and heap[0] <= now:
                deadline = heapq.heappop(heap)
                for key in due_keys(timers.pop(deadline)):
                    state = states.get(key)
                    if state is None or state.deadline != deadline:
                        continue  # a stale entry: the key was rescheduled or dropped
                    state.deadline = None
                    keys[key] = None
                    if self.session:
                        for session in state.take_sessions(gap, now):
                            yield (key, session_meta(session), session, True)
                    else:
                        table = state.window_table()
                        due = [i for i in table if state.deadline_of(self._close_of(i)) <= now]
                        for index in sorted(due):
                            yield (key, self.window_meta(index), state.pop_window(index), False)
                        if not self.sliding:
                            state.make_lone()
        finally:
            self.reschedule(keys, self.now())

    def _probe(self, touched: set[str]) -> None:
        """Until a first accumulator is seen: is it an awaitable (a sync function returning one)?

        A function returns awaitables on every call or never, so one look
        settles it, and later batches pay nothing.
        """
        for key in touched:
            state = self.keys.get(key)
            table = None if state is None else state.window_table()
            if table:
                acc = next(iter(table.values()))
                if isawaitable(acc):
                    raise self.awaitable_result(acc, [])
                self._probing = False
                return

    def awaitable_result(self, value: object, out: list[Any]) -> StepFailed:
        """A sync window function returned an awaitable: a clear error, nothing left unawaited."""
        windows = [state.window_table() for state in self.keys.values()]
        return self.returned_awaitable(self.role.rsplit(" ", 1)[-1], value, out, windows)

    def emitted(self, key: str, meta: WindowMetadata, value: Any) -> tuple[str, Any]:
        """One closed window as the step emits it (see `WindowStep.emit_metadata`)."""
        return (key, (meta, value)) if self.emit_metadata else (key, value)

    def on_tick(self, placed: int = 0) -> list[Any]:
        """Close what is due; after a batch of ``placed`` items (see `CLOSE_PER_TICK`)."""
        budget = max(CLOSE_PER_TICK, 2 * placed)
        if self.session:
            return tick_sessions(self, budget)
        if self.event_time:
            return tick_windows(self, budget)
        out: list[Any] = []
        with closing(self._closing()) as due:
            for key, meta, payload, is_session in due:
                try:
                    value = self.combine(payload) if is_session else self.finish(payload)
                except BaseException as error:
                    # The windows this tick closed before still go out.
                    raise self.fail(error, out) from None
                if isawaitable(value):
                    raise self.awaitable_result(value, out)
                out.append(self.emitted(key, meta, value))
        return out

    async def atick(self) -> list[Any]:
        if not self.is_async:
            return self.on_tick()
        out: list[Any] = []
        with closing(self._closing()) as due:
            for key, meta, payload, is_session in due:
                try:
                    value = await self.acombine(payload) if is_session else self.finish(payload)
                except BaseException as error:
                    raise self.fail(error) from None
                out.append(self.emitted(key, meta, value))
        return out

    async def end_of_input(self) -> list[Any]:
        """End of input: the watermark is maximal, every window closes."""
        out: list[Any] = []
        metas: dict[int, WindowMetadata] = {}
        keys = self.keys
        if self.dirty is not None:
            self.dirty.update(keys)
            self.dirty.update(self.forgotten)
        for key in list(keys):
            state = keys[key]
            # A lone session and a lone window share the slots (`KeyState`):
            # the step's kind says which it is.
            if self.session:
                for session in state.all_sessions():
                    try:
                        value = await self.acombine(session)
                    except BaseException as error:
                        raise self.fail(error) from None
                    if isawaitable(value):
                        raise self.awaitable_result(value, out)
                    out.append(self.emitted(key, session_meta(session), value))
            else:
                table = state.window_table()
                for index in sorted(table):
                    value = self.finish(table[index])
                    if isawaitable(value):
                        raise self.awaitable_result(value, out)
                    # The keys' windows of one index share its metadata (a
                    # frozen value), as in a tick: a million keys closing at
                    # the end hold one, not a million.
                    meta = metas.get(index)
                    if meta is None:
                        meta = metas[index] = self.window_meta(index)
                    out.append(self.emitted(key, meta, value))
            # Its windows are in ``out``: the state goes now, not with the
            # last key (the output and the states are not held all at once).
            del keys[key]
        self.keys = {}
        self.forgotten = {}
        self.timers = {}
        self.heap = []
        self._keys_peak = self._timers_peak = 0
        return out

    # -- recovery (in `recovery`) ----------------------------------------------

    def restore(self, restored: dict[str, Any]) -> None:
        recovery.restore(self, restored)

    def saved_states(self, keys: set[str]) -> dict[str, Any]:
        return recovery.saved_states(self, keys)
