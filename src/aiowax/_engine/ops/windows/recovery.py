"""Snapshots of a window step: what `WindowOp` saves of its keys, and restoring them.

A key is saved with its watermark (as event time, and as wall time for the
system clock) and its open windows and sessions; a key whose windows all
closed is saved with its watermark alone, and one dropped from the memo of
forgotten watermarks is `DELETED`.
"""

from __future__ import annotations

from itertools import count
from typing import TYPE_CHECKING, Any

from aiowax._engine.ops.windows.state import KeyState
from aiowax._recovery.runtime import DELETED

if TYPE_CHECKING:
    from aiowax._engine.ops.windows.op import WindowOp


def restore(op: WindowOp, restored: dict[str, Any]) -> None:
    """Bring back the keys of a snapshot: their watermarks, windows and sessions."""
    anchor = op.anchor()
    last_seq = -1
    for key, saved in restored.items():
        if op.event_time and "wm" in saved:
            # An event-time watermark goes on from where the snapshot
            # left it: the items replayed after it were on time before
            # the crash and must be again, however long the flow was
            # down (the reference adds the downtime; we do not).
            state = KeyState(saved["wm"], anchor.loop)
        else:
            # System time (or a snapshot of an earlier release, which
            # saved no "wm"): the watermark is wall time, so the time the
            # flow was down counts and windows due meanwhile close at once.
            state = KeyState(saved["wm_base"], anchor.to_loop(saved["wm_wall"]))
        if not saved["windows"] and not saved["sessions"]:
            op._forget(key, state)  # only its watermark was saved
            continue
        state.windows = saved["windows"]
        state.sessions = saved["sessions"]
        op.keys[key] = state
        for _, _, entries in state.sessions:
            last_seq = max([last_seq, *(seq for _, seq, _ in entries)])
    if not op.event_time and op.keys:
        # The system clock's watermark goes on from the newest restored.
        newest = max(state.watermark(anchor.loop) for state in op.keys.values())
        op.system_wm = KeyState(newest, anchor.loop)
    # Session entries keep their arrival order across runs.
    op.seq = count(last_seq + 1)
    op.dirty = set()
    op._reschedule(set(op.keys), anchor.loop)


def saved_states(op: WindowOp, keys: set[str]) -> dict[str, Any]:
    """What to save of ``keys``: their state, a watermark alone, or `DELETED`."""
    anchor = op.anchor()
    out: dict[str, Any] = {}
    for key in keys:
        state = op.keys.get(key)
        if state is None:
            kept = op.forgotten.get(key)
            if kept is None:
                out[key] = DELETED
                continue
            # Its watermark outlives its windows: save it alone.
            state = KeyState(*kept)
        out[key] = {
            "wm": state.watermark(anchor.loop),
            "wm_base": state.wm_base,
            "wm_wall": anchor.to_wall_us(state.wm_loop),
            "windows": state.windows,
            "sessions": state.sessions,
        }
    return out
