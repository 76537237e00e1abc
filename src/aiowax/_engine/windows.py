"""Window operators: fold_window, reduce_window, collect_window.

Times are integer microseconds since the Unix epoch (UTC), never floats.
Each key has its own watermark: the newest item time seen minus the allowed
lateness, advancing with the event loop's clock while the key is idle. A
window closes once the watermark reaches its close time; the step keeps one
timer per key (a heap of loop-clock deadlines) so a window closes on time even
if no item ever comes again. A key whose windows have all closed is dropped at
once, windows, values and timer; only its watermark stays behind, in a
bounded memo (`FORGOTTEN_WATERMARKS`), so that a late item of that key is
still recognised as late.
"""

from __future__ import annotations

import heapq
import inspect
import logging
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import count
from typing import Any

from aiowax._definition.flow import Step
from aiowax._definition.window import (
    EventClockConfig,
    SessionWindow,
    SlidingWindow,
    WindowMetadata,
)
from aiowax._engine.clock import Clock
from aiowax._engine.exchange import bad_item_error
from aiowax._engine.failure import StepFailed, fail
from aiowax._engine.keyed import NO_OUTPUT, run_per_key
from aiowax._engine.snapshots import DELETED
from aiowax._engine.stateful import TimedOp
from aiowax._engine.timeutil import EPOCH, US, from_us, to_us
from aiowax._util import describe, is_async_callable

logger = logging.getLogger("aiowax.window")

_MISSING: Any = object()

#: Forgotten keys (all windows closed) whose watermark a step remembers, per
#: worker: about 150 bytes each. Past it the oldest go, and a late item of
#: such a key would open its window anew instead of being counted late.
FORGOTTEN_WATERMARKS = 100_000


class _KeyState:
    """One key's watermark and open windows."""

    __slots__ = ("deadline", "sessions", "windows", "wm_base", "wm_loop")

    def __init__(self, wm_base: int, wm_loop: float) -> None:
        # Watermark at loop time ``wm_loop``; it then advances with the loop.
        self.wm_base = wm_base
        self.wm_loop = wm_loop
        # Sliding windows: window index -> accumulator.
        self.windows: dict[int, Any] = {}
        # Sessions: [start, end, [(time, seq, value), ...]] sorted by start.
        self.sessions: list[list[Any]] = []
        self.deadline: float | None = None

    def watermark(self, now: float) -> int:
        return self.wm_base + round((now - self.wm_loop) * 1e6)


class WindowOp(TimedOp):
    """The engine side of the three window operators.

    Subclasses say how values accumulate: `start` / `add` for sliding
    windows (eager), `finish` for the emitted value, and `combine` for
    sessions (which keep raw values until they close, so that a bridging
    item can merge two sessions without losing either).
    """

    kind = "window"
    role = "window function"

    def __init__(self, step: Step, worker_index: int, clock: Clock) -> None:
        super().__init__(step, worker_index, clock)
        self.clock_config = step.args["clock_config"]
        window = step.args["window_config"]
        self.event_time = isinstance(self.clock_config, EventClockConfig)
        self.on_late: Callable[..., Any] | None = None
        if self.event_time:
            self.dt_getter: Callable[[Any], Any] = self.clock_config.dt_getter
            self.wait_us = self.clock_config.wait_for_system_duration // US
            self.on_late = self.clock_config.on_late
        else:
            self.wait_us = 0
        self.session = isinstance(window, SessionWindow)
        if self.session:
            self.gap_us: int = window.gap // US
        else:
            assert isinstance(window, SlidingWindow)
            self.length_us = window.length // US
            self.offset_us = window.offset // US
            self.align_us = to_us(window.align_to)
        self.keys: dict[str, _KeyState] = {}
        # Keys whose windows all closed keep only their watermark, as
        # ``(wm_base, wm_loop)``, so it never goes back and a late item of a
        # forgotten key is still caught; the oldest are dropped past a bound.
        self.forgotten: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self.heap: list[tuple[float, int, str]] = []
        self.seq = count()
        #: Items dropped because their window had already closed.
        self.late_count = 0
        self.is_async = self._user_async() or (
            self.event_time and is_async_callable(self.dt_getter)
        )

    # -- what subclasses define ---------------------------------------------

    def _user_async(self) -> bool:
        return False

    def add(self, acc: Any, value: Any, t_us: int) -> Any:
        """Fold ``value`` (at time ``t_us``) into an accumulator or `_MISSING`."""
        raise NotImplementedError

    async def aadd(self, acc: Any, value: Any, t_us: int) -> Any:
        return self.add(acc, value, t_us)

    def finish(self, acc: Any) -> Any:
        return acc

    def combine(self, entries: list[tuple[int, int, Any]]) -> Any:
        """A closed session's value from its ``(time, seq, value)`` entries."""
        acc = _MISSING
        for t_us, _, value in sorted(entries, key=lambda e: e[1]):
            acc = self.add(acc, value, t_us)
        return self.finish(acc)

    async def acombine(self, entries: list[tuple[int, int, Any]]) -> Any:
        acc = _MISSING
        for t_us, _, value in sorted(entries, key=lambda e: e[1]):
            acc = await self.aadd(acc, value, t_us)
        return self.finish(acc)

    # -- items ----------------------------------------------------------------

    def state_size(self) -> int:
        """Keys with open windows (the memo of forgotten watermarks aside)."""
        return len(self.keys)

    def _time_of(self, value: Any, dt: Any) -> int:
        if not isinstance(dt, datetime):
            msg = (
                f"window step {self.step_id!r}: dt_getter must return a datetime, "
                f"got {describe(dt)} for {describe(value)}"
            )
            raise StepFailed(TypeError(msg))
        if dt.tzinfo is None or dt.utcoffset() is None:
            msg = (
                f"window step {self.step_id!r}: dt_getter returned the naive datetime "
                f"{dt!r}; return a timezone-aware one (e.g. tzinfo=timezone.utc)"
            )
            raise StepFailed(TypeError(msg))
        return to_us(dt)

    def _check(self, item: Any) -> tuple[str, Any]:
        if type(item) is not tuple or len(item) != 2 or type(item[0]) is not str:
            raise StepFailed(bad_item_error(self.step_id, item))
        return item

    def _state(self, key: str, now: float, t_us: int) -> _KeyState:
        state = self.keys.get(key)
        if state is None:
            kept = self.forgotten.pop(key, None)
            if kept is not None:
                state = self.keys[key] = _KeyState(*kept)
            else:
                state = self.keys[key] = _KeyState(t_us - self.wait_us, now)
        return state

    def _late(self, key: str, value: Any, t_us: int, wm: int) -> None:
        self.late_count += 1
        logger.debug(
            "step %r dropped a late item of key %r at %s (watermark %s): %r",
            self.step_id,
            key,
            from_us(t_us),
            from_us(wm),
            value,
        )
        if self.on_late is not None:
            try:
                self.on_late(key, value, from_us(t_us), from_us(wm))
            except Exception as error:
                raise fail(error, self.step_id, f"{self.step.kind} on_late hook") from None

    def _windows_of(self, t_us: int) -> range:
        d = t_us - self.align_us
        return range((d - self.length_us) // self.offset_us + 1, d // self.offset_us + 1)

    def _close_of(self, index: int) -> int:
        return self.align_us + index * self.offset_us + self.length_us

    def _place(self, key: str, state: _KeyState, value: Any, t_us: int, wm: int) -> bool:
        """Put one item in its windows; False when it was late for all of them."""
        if self.session:
            if t_us < wm:
                return False
            self._join_session(state, value, t_us)
            return True
        indices = self._windows_of(t_us)
        # A time in the gap between windows (offset > length) belongs to no
        # window: dropping it is what the configuration asks, not lateness.
        placed = not indices
        windows = state.windows
        for index in indices:
            if self._close_of(index) <= wm:
                continue
            windows[index] = self.add(windows.get(index, _MISSING), value, t_us)
            placed = True
        return placed

    def _join_session(self, state: _KeyState, value: Any, t_us: int) -> None:
        gap = self.gap_us
        entry = (t_us, next(self.seq), value)
        joined = [s for s in state.sessions if s[0] - gap < t_us < s[1] + gap]
        if not joined:
            state.sessions.append([t_us, t_us, [entry]])
            state.sessions.sort(key=lambda s: s[0])
            return
        first = joined[0]
        # A bridging item merges every session it touches into the first.
        for other in joined[1:]:
            first[0] = min(first[0], other[0])
            first[1] = max(first[1], other[1])
            first[2].extend(other[2])
            state.sessions.remove(other)
        first[0] = min(first[0], t_us)
        first[1] = max(first[1], t_us)
        first[2].append(entry)

    def _advance(self, state: _KeyState, now: float, t_us: int) -> None:
        wm = max(state.watermark(now), t_us - self.wait_us)
        state.wm_base, state.wm_loop = wm, now

    def _batch_time(self) -> tuple[float, int]:
        now = self.now()
        return now, to_us(self.clock.now())

    def process(self, batch: list[Any]) -> list[Any]:
        now, sys_us = self._batch_time()
        touched: set[str] = set()
        try:
            if self.event_time and not self.session:
                self._place_event_time(batch, now, touched)
            else:
                self._place_each(batch, now, sys_us, touched)
        except StepFailed as failed:
            # Windows the items before the failure closed still go out.
            self._reschedule(touched, now)
            failed.partial = self.on_tick()
            raise
        self._reschedule(touched, now)
        return self.on_tick()

    def _place_event_time(self, batch: list[Any], now: float, touched: set[str]) -> None:
        """The hot loop of sliding windows on the event clock, inlined.

        Same rules as `_accept` (which handles every other case), without a
        method call per step of the way: this loop is most of a window
        step's cost.
        """
        keys = self.keys
        dt_getter = self.dt_getter
        add = self.add
        # reduce_window's accumulation is inlined too: one call per item less.
        reducer: Callable[[Any, Any], Any] | None = getattr(self, "reducer", None)
        align, length, offset, wait = self.align_us, self.length_us, self.offset_us, self.wait_us
        tumbling = length == offset
        touch = touched.add
        unchecked = not self.items_checked
        # Module globals as locals: a global lookup per use adds up here.
        missing, utc, epoch, plain_datetime = _MISSING, UTC, EPOCH, datetime
        for item in batch:
            # A tuple first (unpacking anything else could run user code),
            # then exactly two elements, the first a str.
            if unchecked and type(item) is not tuple:
                raise StepFailed(bad_item_error(self.step_id, item))
            try:
                key, value = item
            except ValueError:
                raise StepFailed(bad_item_error(self.step_id, item)) from None
            if unchecked and type(key) is not str:
                raise StepFailed(bad_item_error(self.step_id, item))
            try:
                dt = dt_getter(value)
            except Exception as error:
                raise fail(error, self.step_id, f"{self.step.kind} dt_getter") from None
            if dt.__class__ is plain_datetime and dt.tzinfo is utc:
                delta = dt - epoch
                t_us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
            else:
                t_us = self._time_of(value, dt)
            state = keys.get(key)
            if state is None:
                state = self._state(key, now, t_us)
            if state.wm_loop == now:
                wm = state.wm_base
            else:
                wm = state.wm_base + round((now - state.wm_loop) * 1e6)
            windows = state.windows
            placed = False
            try:
                if tumbling:
                    index = (t_us - align) // length
                    if align + index * length + length > wm:
                        if reducer is not None:
                            acc = windows.get(index, missing)
                            windows[index] = value if acc is missing else reducer(acc, value)
                        else:
                            windows[index] = add(windows.get(index, missing), value, t_us)
                        placed = True
                else:
                    d = t_us - align
                    indices = range((d - length) // offset + 1, d // offset + 1)
                    placed = not indices
                    for index in indices:
                        if align + index * offset + length > wm:
                            windows[index] = add(windows.get(index, missing), value, t_us)
                            placed = True
            except StepFailed:
                raise
            except Exception as error:
                raise fail(error, self.step_id, self.role) from None
            if not placed:
                self._late(key, value, t_us, wm)
            candidate = t_us - wait
            state.wm_base = candidate if candidate > wm else wm
            state.wm_loop = now
            touch(key)

    def _place_each(self, batch: list[Any], now: float, sys_us: int, touched: set[str]) -> None:
        """Sessions and the system clock: one item at a time through `_accept`."""
        for item in batch:
            key, value = self._check(item)
            if self.event_time:
                try:
                    dt = self.dt_getter(value)
                except Exception as error:
                    raise fail(error, self.step_id, f"{self.step.kind} dt_getter") from None
                t_us = self._time_of(value, dt)
            else:
                t_us = sys_us
            self._accept(key, value, t_us, now, touched)

    def _accept(self, key: str, value: Any, t_us: int, now: float, touched: set[str]) -> None:
        state = self._state(key, now, t_us)
        # On the system clock an item's time is the watermark: never late.
        wm = state.watermark(now) if self.event_time else t_us
        try:
            placed = self._place(key, state, value, t_us, wm)
        except StepFailed:
            raise
        except Exception as error:
            raise fail(error, self.step_id, self.role) from None
        if not placed:
            self._late(key, value, t_us, wm)
        self._advance(state, now, t_us)
        touched.add(key)

    async def aprocess(self, batch: list[Any]) -> list[Any]:
        now, sys_us = self._batch_time()
        touched: set[str] = set()

        async def one(key: str, value: Any) -> Any:
            if self.event_time:
                try:
                    dt = self.dt_getter(value)
                    if inspect.isawaitable(dt):
                        dt = await dt
                except Exception as error:
                    raise fail(error, self.step_id, f"{self.step.kind} dt_getter") from None
                t_us = self._time_of(value, dt)
            else:
                t_us = sys_us
            state = self._state(key, now, t_us)
            wm = state.watermark(now) if self.event_time else t_us
            if self.session:
                if t_us < wm:
                    self._late(key, value, t_us, wm)
                else:
                    self._join_session(state, value, t_us)
            else:
                indices = self._windows_of(t_us)
                placed = not indices
                for index in indices:
                    if self._close_of(index) <= wm:
                        continue
                    try:
                        acc = await self.aadd(state.windows.get(index, _MISSING), value, t_us)
                    except Exception as error:
                        raise fail(error, self.step_id, self.role) from None
                    state.windows[index] = acc
                    placed = True
                if not placed:
                    self._late(key, value, t_us, wm)
            self._advance(state, now, t_us)
            touched.add(key)
            return NO_OUTPUT

        try:
            await run_per_key(self.step_id, batch, one)
        except StepFailed as failed:
            self._reschedule(touched, now)
            failed.partial = await self.atick()
            raise
        self._reschedule(touched, now)
        return await self.atick()

    # -- closing ----------------------------------------------------------------

    def _first_close(self, state: _KeyState) -> int | None:
        """The earliest close time of a key's open windows (None: none open)."""
        if self.session:
            if not state.sessions:
                return None
            last_item: int = min(s[1] for s in state.sessions)
            return last_item + self.gap_us
        if not state.windows:
            return None
        # Close times grow with the window index.
        return self._close_of(min(state.windows))

    def _deadline(self, state: _KeyState, close_us: int) -> float:
        """Loop time at which the key's watermark reaches ``close_us``."""
        return state.wm_loop + (close_us - state.wm_base) / 1e6

    def start_recovery(self, restored: dict[str, Any]) -> None:
        # Watermarks were saved against wall time: the time the flow was
        # down counts as elapsed, so windows due meanwhile close at once.
        now, wall = self.now(), to_us(self.clock.now())
        last_seq = -1
        for key, saved in restored.items():
            state = _KeyState(saved["wm_base"], now - (wall - saved["wm_wall"]) / 1e6)
            if not saved["windows"] and not saved["sessions"]:
                self._forget(key, state)  # only its watermark was saved
                continue
            state.windows = saved["windows"]
            state.sessions = saved["sessions"]
            self.keys[key] = state
            for _, _, entries in state.sessions:
                last_seq = max([last_seq, *(seq for _, seq, _ in entries)])
        # Session entries keep their arrival order across runs.
        self.seq = count(last_seq + 1)
        self.dirty = set()
        self._reschedule(set(self.keys), now)

    def snapshot(self) -> dict[str, Any]:
        if not self.dirty:
            return {}
        now, wall = self.now(), to_us(self.clock.now())
        out: dict[str, Any] = {}
        for key in self.dirty:
            state = self.keys.get(key)
            if state is None:
                kept = self.forgotten.get(key)
                if kept is None:
                    out[key] = DELETED
                    continue
                # Its watermark outlives its windows: save it alone.
                state = _KeyState(*kept)
            out[key] = {
                "wm_base": state.wm_base,
                "wm_wall": wall - round((now - state.wm_loop) * 1e6),
                "windows": state.windows,
                "sessions": state.sessions,
            }
        self.dirty.clear()
        return out

    def _reschedule(self, keys: set[str], now: float) -> None:
        if self.dirty is not None:
            self.dirty.update(keys)
        for key in keys:
            state = self.keys.get(key)
            if state is None:
                continue
            first = self._first_close(state)
            if first is None:
                del self.keys[key]
                if self.event_time:
                    self._forget(key, state)
                continue
            deadline = self._deadline(state, first)
            # Only an earlier deadline needs a new heap entry: the watermark
            # moves every batch, and a later one is found when the entry
            # already there comes due (then the key is rescheduled).
            if state.deadline is None or deadline < state.deadline:
                state.deadline = deadline
                if not self.heap or deadline < self.heap[0][0]:
                    self.wake.set()
                heapq.heappush(self.heap, (deadline, next(self.seq), key))

    def _forget(self, key: str, state: _KeyState) -> None:
        forgotten = self.forgotten
        forgotten[key] = (state.wm_base, state.wm_loop)
        if len(forgotten) > FORGOTTEN_WATERMARKS:
            dropped, _ = forgotten.popitem(last=False)
            if self.dirty is not None:
                self.dirty.add(dropped)

    def next_deadline(self) -> float | None:
        return self.heap[0][0] if self.heap else None

    def _due(self) -> list[tuple[str, _KeyState, float]]:
        now = self.now()
        due = []
        heap = self.heap
        while heap and heap[0][0] <= now:
            deadline, _, key = heapq.heappop(heap)
            state = self.keys.get(key)
            if state is not None and state.deadline == deadline:
                state.deadline = None
                due.append((key, state, now))
        return due

    def _closed(self, state: _KeyState, now: float) -> tuple[list[Any], list[Any]]:
        """Split off the windows (or sessions) of a key that are now closed."""
        if self.session:
            done = [s for s in state.sessions if self._deadline(state, s[1] + self.gap_us) <= now]
            state.sessions = [s for s in state.sessions if s not in done]
            return [], done
        closed = [i for i in state.windows if self._deadline(state, self._close_of(i)) <= now]
        return [(i, state.windows.pop(i)) for i in sorted(closed)], []

    def _meta(self, index: int) -> WindowMetadata:
        open_us = self.align_us + index * self.offset_us
        return WindowMetadata(from_us(open_us), from_us(open_us + self.length_us))

    def _closing(self) -> list[tuple[str, WindowMetadata, Any, bool]]:
        """Take out every window that is due: ``(key, meta, payload, is_session)``.

        The payload is a sliding window's accumulator, or a session's raw
        ``(time, seq, value)`` entries; the keys touched are rescheduled.
        """
        closing: list[tuple[str, WindowMetadata, Any, bool]] = []
        keys = set()
        for key, state, now in self._due():
            windows, sessions = self._closed(state, now)
            for index, acc in windows:
                closing.append((key, self._meta(index), acc, False))
            for start, end, entries in sessions:
                closing.append((key, WindowMetadata(from_us(start), from_us(end)), entries, True))
            keys.add(key)
        self._reschedule(keys, self.now())
        return closing

    def on_tick(self) -> list[Any]:
        out: list[Any] = []
        for key, meta, payload, is_session in self._closing():
            try:
                value = self.combine(payload) if is_session else self.finish(payload)
            except Exception as error:
                raise fail(error, self.step_id, self.role) from None
            out.append((key, (meta, value)))
        return out

    async def atick(self) -> list[Any]:
        if not self.is_async:
            return self.on_tick()
        out: list[Any] = []
        for key, meta, payload, is_session in self._closing():
            try:
                value = await self.acombine(payload) if is_session else self.finish(payload)
            except Exception as error:
                raise fail(error, self.step_id, self.role) from None
            out.append((key, (meta, value)))
        return out

    async def flush(self) -> list[Any]:
        """End of input: the watermark is maximal, every window closes."""
        out: list[Any] = []
        for key, state in self.keys.items():
            for index in sorted(state.windows):
                out.append((key, (self._meta(index), self.finish(state.windows[index]))))
            for start, end, entries in state.sessions:
                try:
                    value = await self.acombine(entries)
                except Exception as error:
                    raise fail(error, self.step_id, self.role) from None
                out.append((key, (WindowMetadata(from_us(start), from_us(end)), value)))
        if self.dirty is not None:
            self.dirty.update(self.keys)
            self.dirty.update(self.forgotten)
        self.keys.clear()
        self.forgotten.clear()
        self.heap.clear()
        return out


class FoldWindowOp(WindowOp):
    role = "fold_window folder"

    def __init__(self, step: Step, worker_index: int, clock: Clock) -> None:
        self.builder: Callable[[], Any] = step.args["builder"]
        self.folder: Callable[[Any, Any], Any] = step.args["folder"]
        super().__init__(step, worker_index, clock)

    def _user_async(self) -> bool:
        return is_async_callable(self.builder) or is_async_callable(self.folder)

    def add(self, acc: Any, value: Any, t_us: int) -> Any:
        if acc is _MISSING:
            try:
                acc = self.builder()
            except Exception as error:
                raise fail(error, self.step_id, "fold_window builder") from None
        return self.folder(acc, value)

    async def aadd(self, acc: Any, value: Any, t_us: int) -> Any:
        if acc is _MISSING:
            try:
                acc = self.builder()
                if inspect.isawaitable(acc):
                    acc = await acc
            except Exception as error:
                raise fail(error, self.step_id, "fold_window builder") from None
        acc = self.folder(acc, value)
        return await acc if inspect.isawaitable(acc) else acc


class ReduceWindowOp(WindowOp):
    role = "reduce_window reducer"

    def __init__(self, step: Step, worker_index: int, clock: Clock) -> None:
        self.reducer: Callable[[Any, Any], Any] = step.args["reducer"]
        super().__init__(step, worker_index, clock)

    def _user_async(self) -> bool:
        return is_async_callable(self.reducer)

    def add(self, acc: Any, value: Any, t_us: int) -> Any:
        return value if acc is _MISSING else self.reducer(acc, value)

    async def aadd(self, acc: Any, value: Any, t_us: int) -> Any:
        if acc is _MISSING:
            return value
        acc = self.reducer(acc, value)
        return await acc if inspect.isawaitable(acc) else acc


class CollectWindowOp(WindowOp):
    role = "collect_window"

    # Sliding windows keep (time, value) pairs; sorted by time when emitted
    # (a stable sort keeps arrival order among equal times).

    def add(self, acc: Any, value: Any, t_us: int) -> Any:
        if acc is _MISSING:
            return [(t_us, value)]
        acc.append((t_us, value))
        return acc

    def finish(self, acc: Any) -> Any:
        return [v for _, v in sorted(acc, key=lambda e: e[0])]

    def combine(self, entries: list[tuple[int, int, Any]]) -> Any:
        return [v for _, _, v in sorted(entries, key=lambda e: (e[0], e[1]))]

    async def acombine(self, entries: list[tuple[int, int, Any]]) -> Any:
        return self.combine(entries)
