"""The batch operator: each key's values gathered into lists by size and timeout."""

from __future__ import annotations

from typing import Any

from aiowax._definition.steps import BatchStep
from aiowax._engine.errors import StepFailed
from aiowax._engine.ops.base import StepEnv, TimedOp
from aiowax._engine.ops.keyed import KeyedOp
from aiowax._keys import bad_item_error
from aiowax._recovery.runtime import DELETED


class BatchOp(KeyedOp, TimedOp):
    """A key's list goes out when full, when its timeout passes, or at the end."""

    def __init__(self, step: BatchStep, env: StepEnv) -> None:
        super().__init__(step, env)
        self.max_size = step.max_size
        self.timeout = step.timeout.total_seconds()
        # Key -> deadline, in the order the lists started: as every list
        # waits the same timeout, the first entry is always the earliest.
        self.deadlines: dict[str, float] = {}

    def process(self, batch: list[Any]) -> list[Any]:
        unchecked = not self.env.items_checked
        out: list[Any] = []
        lists = self.state
        deadlines = self.deadlines
        max_size = self.max_size
        now = self.now()
        was_idle = not deadlines
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
                    deadlines[key] = now + self.timeout
                values.append(value)
                if len(values) >= max_size:
                    del lists[key], deadlines[key]
                    out.append((key, values))
                if dirty is not None:
                    dirty.add(key)
        except StepFailed as failed:
            failed.partial = out
            raise
        out.extend(self.on_tick())
        if was_idle and deadlines:
            self.timer.rearm()
        return out

    def next_deadline(self) -> float | None:
        for deadline in self.deadlines.values():
            return deadline
        return None

    def on_tick(self) -> list[Any]:
        out: list[Any] = []
        now = self.now()
        deadlines = self.deadlines
        while deadlines:
            key, deadline = next(iter(deadlines.items()))
            if deadline > now:
                break
            del deadlines[key]
            out.append((key, self.state.pop(key)))
            if self.dirty is not None:
                self.dirty.add(key)
        return out

    def restore(self, restored: dict[str, Any]) -> None:
        # Saved deadlines are wall-clock times: time the flow was down
        # counts, and lists whose timeout passed meanwhile go out at once.
        anchor = self.anchor()
        for key, (values, deadline_us) in sorted(restored.items(), key=lambda kv: kv[1][1]):
            self.state[key] = values
            self.deadlines[key] = anchor.to_loop(deadline_us)
        self.dirty = set()
        if self.deadlines:
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
        return out
