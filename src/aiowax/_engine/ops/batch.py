"""The batch operator: each key's values gathered into lists by size and timeout."""

from __future__ import annotations

from collections import deque
from typing import Any

from aiowax._definition.steps import BatchStep
from aiowax._engine.errors import StepFailed
from aiowax._engine.ops.base import StepEnv, TimedOp
from aiowax._engine.ops.keyed import KeyedOp, compacted
from aiowax._keys import bad_item_error
from aiowax._recovery.runtime import DELETED

#: Entries of lists gone out full that the queue may hold beyond twice the
#: lists waiting before it is rebuilt (see `BatchOp.__init__`).
STALE_SLACK = 1024


class BatchOp(KeyedOp, TimedOp):
    """A key's list goes out when full, when its timeout passes, or at the end."""

    def __init__(self, step: BatchStep, env: StepEnv) -> None:
        super().__init__(step, env)
        self.max_size = step.max_size
        self.timeout = step.timeout.total_seconds()
        # Key -> the deadline of its list (for snapshots).
        self.deadlines: dict[str, float] = {}
        self.deadlines_peak = 0
        # (deadline, key) in the order the lists started: as every list
        # waits the same timeout, the first is always the earliest. Not the
        # dict's order: popping a dict's first entry scans every entry
        # deleted before it, so a tick cost as much as the lists waiting. A
        # list that went out full leaves its entry behind, skipped when it
        # comes up (the key has no deadline, or a newer list's), and
        # swept out once such entries outnumber the lists waiting.
        self.queue: deque[tuple[float, str]] = deque()

    def process(self, batch: list[Any]) -> list[Any]:
        unchecked = not self.env.items_checked
        out: list[Any] = []
        lists = self.state
        deadlines = self.deadlines
        max_size = self.max_size
        now = self.now()
        queue = self.queue
        was_idle = not queue
        dirty = self.dirty
        try:
            for item in batch:
                # `aiowax._keys.is_keyed_item`, inlined: an exact tuple first
                # (unpacking anything else could run user code), unpacking
                # checks the length, then the key (see ops/keyed.py).
                if unchecked and type(item) is not tuple:
                    item = self._pair(item)
                try:
                    key, value = item
                except ValueError:
                    raise StepFailed(bad_item_error(self.step_id, item)) from None
                if unchecked and type(key) is not str:
                    key, value = self._pair(item)
                values = lists.get(key)
                if values is None:
                    values = lists[key] = []
                    deadline = deadlines[key] = now + self.timeout
                    queue.append((deadline, key))
                values.append(value)
                if len(values) >= max_size:
                    del lists[key], deadlines[key]
                    out.append((key, values))
                if dirty is not None:
                    dirty.add(key)
        except StepFailed as failed:
            failed.partial = out
            raise
        if len(queue) > 2 * len(deadlines) + STALE_SLACK:
            self.queue = queue = deque((d, k) for k, d in deadlines.items())
        out.extend(self.on_tick())
        if was_idle and queue:
            self.timer.rearm()
        return out

    def next_deadline(self) -> float | None:
        queue = self.queue
        return queue[0][0] if queue else None

    def on_tick(self) -> list[Any]:
        out: list[Any] = []
        now = self.now()
        queue, state, deadlines, dirty = self.queue, self.state, self.deadlines, self.dirty
        while queue:
            deadline, key = queue[0]
            if deadline > now:
                break
            queue.popleft()
            if deadlines.get(key) != deadline:
                continue  # went out full (see __init__)
            del deadlines[key]
            out.append((key, state.pop(key)))
            if dirty is not None:
                dirty.add(key)
        # Give back the room of lists gone (see `compacted`).
        self.compact_state()
        self.deadlines, self.deadlines_peak = compacted(deadlines, self.deadlines_peak)
        return out

    def restore(self, restored: dict[str, Any]) -> None:
        # Saved deadlines are wall-clock times: time the flow was down
        # counts, and lists whose timeout passed meanwhile go out at once.
        anchor = self.anchor()
        for key, (values, deadline_us) in sorted(restored.items(), key=lambda kv: kv[1][1]):
            self.state[key] = values
            deadline = self.deadlines[key] = anchor.to_loop(deadline_us)
            self.queue.append((deadline, key))
        self.dirty = set()
        if self.queue:
            self.timer.rearm()

    def saved_states(self, keys: set[str]) -> dict[str, Any]:
        anchor, state, deadlines = self.anchor(), self.state, self.deadlines
        return {
            key: DELETED if key not in state else (state[key], anchor.to_wall_us(deadlines[key]))
            for key in keys
        }

    async def end_of_input(self) -> list[Any]:
        out = list(self.state.items())
        if self.dirty is not None:
            self.dirty.update(self.state)
        self.state.clear()
        self.deadlines.clear()
        self.queue.clear()
        return out
