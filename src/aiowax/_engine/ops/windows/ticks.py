"""How a window step closes what is due on a tick, with sync user code.

`WindowOp._closing` takes due windows out one by one, for every case; the
two functions here do the same inlined, for the common cases that make a
step with many keys spend its time closing: `tick_windows` for tumbling and
sliding windows, `tick_sessions` for sessions. Both close the due windows of
at most ``budget`` keys a tick and have the step's timer tick again at once
for the rest (see `op.CLOSE_PER_TICK`). The metadata of a closed window is
made here too (`metadata`, `clamped`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from heapq import heappop, heappush
from inspect import isawaitable
from types import GeneratorType
from typing import TYPE_CHECKING, Any

from aiowax._definition.window import WindowMetadata
from aiowax._engine.ops.windows.state import MISSING, KeyState, Session, due_keys
from aiowax._engine.timeutil import from_us, to_us

if TYPE_CHECKING:
    from aiowax._engine.ops.windows.op import WindowOp

#: The first and last instants a `datetime` can hold, in microseconds.
MIN_US = to_us(datetime.min.replace(tzinfo=UTC))
MAX_US = to_us(datetime.max.replace(tzinfo=UTC))

_new_metadata = object.__new__
# Its slots' descriptors: they set a frozen dataclass's fields.
_set_open: Callable[[WindowMetadata, datetime], None] = vars(WindowMetadata)["open_time"].__set__
_set_close: Callable[[WindowMetadata, datetime], None] = vars(WindowMetadata)["close_time"].__set__


def metadata(opened: datetime, closed: datetime) -> WindowMetadata:
    """``WindowMetadata(opened, closed)``, made faster than its frozen ``__init__`` does."""
    meta: WindowMetadata = _new_metadata(WindowMetadata)
    _set_open(meta, opened)
    _set_close(meta, closed)
    return meta


def session_meta(session: Session) -> WindowMetadata:
    """A session's window: from its first item's time to its last one's."""
    opened = from_us(session[0])
    return metadata(opened, opened if session[1] == session[0] else from_us(session[1]))


def clamped(us: int) -> datetime:
    """The UTC datetime of ``us``, clamped to the range a `datetime` can hold.

    A window of the first or last hours of that range (an item time of year
    9999 is a common "never" sentinel) opens or closes outside it: its
    metadata says `datetime.min` or `datetime.max` rather than ending the
    run with an OverflowError (issue 11, U2).
    """
    return from_us(min(max(us, MIN_US), MAX_US))


def due_states(
    op: WindowOp, now: float, budget: int, keys: dict[str, None]
) -> list[tuple[str, KeyState]]:
    """The keys due by ``now`` (at most ``budget``) and their states, as they were scheduled.

    Each one loses its timer entry and goes in ``keys``, which the tick
    reschedules when it ends. If more are due, those keep their entry and
    the step's timer ticks again at once: the rest close in a next tick,
    once this tick's output went on.
    """
    heap, timers, states = op.heap, op.timers, op.keys
    taken: list[tuple[str, KeyState]] = []
    while heap and heap[0] <= now:
        if len(keys) >= budget:
            op.timer.rearm()
            break
        deadline = heappop(heap)
        due = due_keys(timers.pop(deadline))
        if len(due) > budget - len(keys):
            # Those left keep their entry: due at the same deadline.
            cut = budget - len(keys)
            timers[deadline] = due[cut:]
            heappush(heap, deadline)
            due = due[:cut]
        for key in due:
            state = states.get(key)
            if state is None or state.deadline != deadline:
                continue  # a stale entry: the key was rescheduled or dropped
            state.deadline = None
            keys[key] = None
            taken.append((key, state))
    return taken


def tick_windows(op: WindowOp, budget: int) -> list[Any]:
    """`WindowOp.on_tick` for tumbling and sliding windows (sync user code).

    `WindowOp._closing`, inlined: it closes the due windows of at most
    ``budget`` keys; if more are due, the step's timer ticks again at once.
    The keys that close the same window in a tick share its metadata (a
    frozen value), made once.
    """
    now = op.now()
    out: list[Any] = []
    append = out.append
    keys: dict[str, None] = {}
    align, offset, length = op.align_us, op.offset_us, op.length_us
    finish = op.own_finish
    emit_metadata = op.emit_metadata
    metas: dict[int, WindowMetadata] = {}
    # Types of values seen not to be awaitable: `isawaitable` looks at the
    # type (a generator's flags aside), and costs more than a set lookup.
    plain: set[type] = set()
    tumbling = not op.sliding
    try:
        for key, state in due_states(op, now, budget, keys):
            # `KeyState.deadline_of(close)` is ``(close + base) / 1e6``.
            base = state.wm_loop - state.wm_base
            lone = state.one_at
            closed: list[tuple[int, Any]]
            if lone is not None:
                # A lone window (see `KeyState`): the common case of tumbling.
                if (align + lone * offset + length + base) / 1e6 > now:
                    continue
                closed = [(lone, state.one_value)]
                state.one_at = state.one_value = None
            else:
                closed = []
                windows = state.windows
                # Close times grow with the index, so the due come first.
                for index in sorted(windows):
                    if (align + index * offset + length + base) / 1e6 > now:
                        break
                    closed.append((index, windows.pop(index)))
                if tumbling:
                    state.make_lone()
            for index, value in closed:
                if finish is not None:
                    try:
                        value = finish(value)
                    except BaseException as error:
                        raise op.fail(error, out) from None
                kind = type(value)
                if kind not in plain:
                    if isawaitable(value):
                        # The key's other windows taken out are closed too.
                        raise op.awaitable_result(value, [*out, *(v for _, v in closed)])
                    if kind is not GeneratorType:
                        plain.add(kind)
                if emit_metadata:
                    meta = metas.get(index)
                    if meta is None:
                        meta = metas[index] = op.window_meta(index)
                    append((key, (meta, value)))
                else:
                    append((key, value))
    finally:
        op.reschedule(keys, op.now())
    return out


def tick_sessions(op: WindowOp, budget: int) -> list[Any]:
    """`WindowOp.on_tick` for sessions (sync user code).

    `WindowOp._closing`, inlined: it looks at the sessions of at most
    ``budget`` keys; if more are due, the step's timer ticks again at once.
    A key whose only session holds one item (the common case when keys are
    many) is closed without building its session list.
    """
    now = op.now()
    out: list[Any] = []
    append = out.append
    keys: dict[str, None] = {}
    gap = op.gap_us
    emit_metadata = op.emit_metadata
    # The value of a one-item session, without building it (see `combine`).
    lone = op.lone_combine
    add, finish, missing = op.add, op.finish, MISSING
    plain: set[type] = set()
    try:
        for key, state in due_states(op, now, budget, keys):
            t = state.one_at
            if t is not None and lone:
                # `KeyState.take_sessions` of a lone item, inlined.
                if (t + gap - state.wm_base + state.wm_loop) / 1e6 > now:
                    continue
                value = state.one_value
                state.one_at = state.one_value = None
                try:
                    value = finish(add(missing, value, t))
                except BaseException as error:
                    raise op.fail(error, out) from None
                kind = type(value)
                if kind not in plain:  # as in `tick_windows`
                    if isawaitable(value):
                        raise op.awaitable_result(value, out)
                    if kind is not GeneratorType:
                        plain.add(kind)
                if emit_metadata:
                    opened = from_us(t)
                    append((key, (metadata(opened, opened), value)))
                else:
                    append((key, value))
                continue
            for session in state.take_sessions(gap, now):
                try:
                    value = op.combine(session)
                except BaseException as error:
                    raise op.fail(error, out) from None
                if isawaitable(value):
                    raise op.awaitable_result(value, out)
                append(op.emitted(key, session_meta(session), value))
    finally:
        op.reschedule(keys, op.now())
    return out
