"""Snapshots of a window step: what `WindowOp` saves of its keys, and restoring them.

A key is saved with its watermark (as event time, and as wall time for the
system clock), its open windows and sessions, and what they mean (the
windower and the clock, checked on resume); a key whose windows all
closed is saved with its watermark alone, and one dropped from the memo of
forgotten watermarks is `DELETED`. Sessions are saved as ``[start, end,
[(time, seq, value), ...]]``, whatever their shape in memory (see
`state.Session`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiowax._engine.ops.windows.state import KeyState, Session, loop_us, session_entries
from aiowax._engine.timeutil import from_us
from aiowax._errors import UnmatchedSnapshotsError
from aiowax._recovery.runtime import DELETED

if TYPE_CHECKING:
    from aiowax._engine.ops.windows.op import WindowOp


#: Keys listed in the error about snapshots of another windower.
_LISTED_KEYS = 5


def windower_of(op: WindowOp) -> tuple[Any, ...]:
    """What a key's saved windows mean: the windower, in µs (saved with each key)."""
    if op.session:
        return ("session", op.gap_us)
    return ("windows", op.length_us, op.offset_us, op.align_us)


def _described(windower: tuple[Any, ...]) -> str:
    if windower[0] == "session":
        return f"sessions with a {windower[1] / 1e6:g} s gap"
    _, length, offset, align = windower
    return (
        f"{length / 1e6:g} s windows every {offset / 1e6:g} s "
        f"aligned to {from_us(align).isoformat()}"
    )


def clock_of(op: WindowOp) -> str:
    """Which clock a key's saved watermark and windows are on (saved with each key)."""
    return "event" if op.event_time else "system"


#: How the refusal names each clock.
_CLOCKS = {"event": "EventClockConfig", "system": "SystemClockConfig"}


def _check_clock(op: WindowOp, restored: dict[str, Any]) -> None:
    """Refuse snapshots of open windows taken on the other clock.

    An event-time window holds items by their own times, a system-time one
    by when they came; and a watermark on one clock is no time on the
    other (a system clock's is today: every older event time would be
    late). Snapshots saved without their clock are taken as they are.
    """
    expected = clock_of(op)
    keys = [
        key
        for key, saved in restored.items()
        if saved.get("clock", expected) != expected and (saved["windows"] or saved["sessions"])
    ]
    if not keys:
        return
    taken = "system" if expected == "event" else "event"
    raise _refused(
        op,
        keys,
        f"windows open on the {taken} clock ({_CLOCKS[taken]}), but the step now runs on "
        f"the {expected} clock ({_CLOCKS[expected]})",
        "the clock",
    )


def _check_windower(op: WindowOp, restored: dict[str, Any]) -> None:
    """Refuse snapshots of open windows taken with another windower.

    A window is saved by its index (or a session by its bounds): under
    other lengths, offsets or alignments, or sessions instead of windows,
    the same numbers would put the values in the wrong windows, or drop
    them. Snapshots of an earlier release, saved without their windower,
    are taken as they are.
    """
    expected = windower_of(op)
    other: dict[tuple[Any, ...], list[str]] = {}
    for key, saved in restored.items():
        taken = saved.get("windower")
        if taken is None or tuple(taken) == expected:
            continue
        if saved["windows"] or saved["sessions"]:
            other.setdefault(tuple(taken), []).append(key)
    if not other:
        return
    taken, keys = next(iter(other.items()))
    raise _refused(
        op,
        keys,
        f"open {_described(taken)}, but the step now has {_described(expected)}",
        "the windower",
    )


def _refused(op: WindowOp, keys: list[str], held: str, what: str) -> UnmatchedSnapshotsError:
    """The refusal of ``keys``' snapshots, which hold ``held``; ``what`` to put back."""
    listed = ", ".join(repr(k) for k in sorted(keys)[:_LISTED_KEYS])
    more = f" and {len(keys) - _LISTED_KEYS} more" if len(keys) > _LISTED_KEYS else ""
    return UnmatchedSnapshotsError(
        f"{op.step.kind} step {op.step_id!r}: the snapshots of {len(keys)} key(s) ({listed}{more}) "
        f"hold {held}; their windows cannot be carried over. Put {what} back to resume, "
        "or give the step a new id and run once with "
        "RecoveryConfig(..., discard_unmatched=True) to drop the old windows on purpose."
    )


def restore(op: WindowOp, restored: dict[str, Any]) -> None:
    """Bring back the keys of a snapshot: their watermarks, windows and sessions.

    A key saved on the other clock with no window open (its watermark
    alone) starts afresh: that watermark is no time on this clock.

    Raises:
        UnmatchedSnapshotsError: Keys were saved with open windows of another
            windower (see `_check_windower`) or on the other clock
            (`_check_clock`).
    """
    _check_clock(op, restored)
    _check_windower(op, restored)
    anchor = op.anchor()
    clock = clock_of(op)
    other_clock: set[str] = set()
    for key, saved in restored.items():
        if saved.get("clock", clock) != clock:
            other_clock.add(key)  # saved as deleted at the next snapshot
            continue
        if op.event_time and "wm" in saved:
            # An event-time watermark goes on from where the snapshot
            # left it: the items replayed after it were on time before
            # the crash and must be again, however long the flow was
            # down (the reference adds the downtime; we do not).
            state = KeyState(saved["wm"], loop_us(anchor.loop))
        else:
            # System time (or a snapshot of an earlier release, which
            # saved no "wm"): the watermark is wall time, so the time the
            # flow was down counts and windows due meanwhile close at once.
            state = KeyState(saved["wm_base"], loop_us(anchor.to_loop(saved["wm_wall"])))
        if not saved["windows"] and not saved["sessions"]:
            op._forget(key, state)  # only its watermark was saved
            continue
        if not op.session:
            state.windows = saved["windows"]
        if saved["sessions"]:
            # In the list, not as a lone item: restoring is not worth the code.
            state.sessions = [_session(*saved_session) for saved_session in saved["sessions"]]
            # Session items keep their arrival order across runs.
            state.n = 1 + max(s[i] for s in state.sessions for i in range(3, len(s), 3))
        op.keys[key] = state
    if not op.event_time and op.keys:
        # The system clock's watermark goes on from the newest restored.
        newest = max(state.watermark(anchor.loop) for state in op.keys.values())
        op.system_wm = KeyState(newest, loop_us(anchor.loop))
    op.dirty = other_clock
    op.reschedule(set(op.keys), anchor.loop)


def saved_states(op: WindowOp, keys: set[str]) -> dict[str, Any]:
    """What to save of ``keys``: their state, a watermark alone, or `DELETED`."""
    anchor = op.anchor()
    windower = windower_of(op)
    clock = clock_of(op)
    out: dict[str, Any] = {}
    for key in keys:
        state = op.keys.get(key)
        if state is None:
            kept = op.forgotten.get(key)
            if kept is None:
                out[key] = DELETED
                continue
            # Its watermark outlives its windows: save it alone.
            state = KeyState(kept, 0)
        wm = state.watermark(anchor.loop)
        out[key] = {
            "wm": wm,
            # The watermark at a wall time, for the system clock.
            "wm_base": wm,
            "wm_wall": anchor.wall_us,
            # A lone session and a lone window share the slots (`KeyState`).
            "windows": {} if op.session else state.window_table(),
            "sessions": (
                [[s[0], s[1], session_entries(s)] for s in state.all_sessions()]
                if op.session
                else []
            ),
            # What the windows' indices (or the sessions) mean, for a resume
            # to check (`_check_windower`); about 40 bytes a key pickled.
            "windower": windower,
            # And which clock they are on (`_check_clock`).
            "clock": clock,
        }
    return out


def _session(start: int, end: int, entries: list[tuple[int, int, Any]]) -> Session:
    """A saved session in memory: its items flat, in arrival order."""
    session: Session = [start, end]
    for entry in sorted(entries, key=lambda e: e[1]):
        session += entry
    return session
