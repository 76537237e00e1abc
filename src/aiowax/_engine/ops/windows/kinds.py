"""How each window operator accumulates: fold_window, reduce_window, collect_window."""

from __future__ import annotations

import inspect
from typing import Any

from aiowax._definition.steps import CollectWindowStep, FoldWindowStep, ReduceWindowStep
from aiowax._engine.errors import StepFailed, fail
from aiowax._engine.ops.base import StepEnv
from aiowax._engine.ops.windows.op import WindowOp
from aiowax._engine.ops.windows.state import MISSING, Session
from aiowax._util import is_async_callable


class FoldWindowOp(WindowOp):
    def __init__(self, step: FoldWindowStep, env: StepEnv) -> None:
        self.builder = step.builder
        self.folder = step.folder
        super().__init__(step, env)

    def _user_async(self) -> bool:
        return is_async_callable(self.builder) or is_async_callable(self.folder)

    def _built(self, error: BaseException) -> StepFailed:
        return fail(error, self.step_id, "fold_window builder")

    def add(self, acc: Any, value: Any, t_us: int) -> Any:
        if acc is MISSING:
            try:
                acc = self.builder()
            except BaseException as error:
                raise self._built(error) from None
        return self.folder(acc, value)

    async def aadd(self, acc: Any, value: Any, t_us: int) -> Any:
        if acc is MISSING:
            try:
                acc = self.builder()
                if inspect.isawaitable(acc):
                    acc = await acc
            except BaseException as error:
                raise self._built(error) from None
        acc = self.folder(acc, value)
        return await acc if inspect.isawaitable(acc) else acc


class ReduceWindowOp(WindowOp):
    def __init__(self, step: ReduceWindowStep, env: StepEnv) -> None:
        self.reducer = step.reducer
        super().__init__(step, env)

    def _user_async(self) -> bool:
        return is_async_callable(self.reducer)

    def add(self, acc: Any, value: Any, t_us: int) -> Any:
        return value if acc is MISSING else self.reducer(acc, value)

    async def aadd(self, acc: Any, value: Any, t_us: int) -> Any:
        if acc is MISSING:
            return value
        acc = self.reducer(acc, value)
        return await acc if inspect.isawaitable(acc) else acc


class CollectWindowOp(WindowOp):
    # Sliding windows keep (time, value) pairs; sorted by time when emitted
    # (a stable sort keeps arrival order among equal times).

    def __init__(self, step: CollectWindowStep, env: StepEnv) -> None:
        super().__init__(step, env)

    def add(self, acc: Any, value: Any, t_us: int) -> Any:
        if acc is MISSING:
            return [(t_us, value)]
        acc.append((t_us, value))
        return acc

    def finish(self, acc: Any) -> Any:
        return [v for _, v in sorted(acc, key=lambda e: e[0])]

    def combine(self, session: Session) -> Any:
        # Items are in arrival order: a stable sort by time is by (time, seq).
        if len(session) == 5:  # one item
            return [session[4]]
        entries = sorted(zip(session[2::3], session[4::3], strict=True), key=lambda e: e[0])
        return [v for _, v in entries]

    async def acombine(self, session: Session) -> Any:
        return self.combine(session)
