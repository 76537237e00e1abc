"""Routers: which worker (or sink partition) each item of a batch goes to.

A router splits one batch into one list per worker, keeping the batch's
order within each list. An exchange calls it on every batch it carries;
the output step uses `split_by_sink_part` to pick the partition each
``(key, value)`` item is written to.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from aiowax._checks import describe
from aiowax._engine.errors import StepFailed, fail
from aiowax._keys import as_keyed_item, bad_item_error, key_owner

#: ``router(batch) -> one list per worker``.
Router = Callable[[list[Any]], list[list[Any]]]

#: Keys whose owner a `KeyRouter` remembers; past that the memo starts afresh.
_MEMO_LIMIT = 65_536


class KeyRouter:
    """Sends each ``(key, value)`` item to the worker owning its key."""

    def __init__(self, step_id: str, worker_count: int) -> None:
        self.step_id = step_id
        self.worker_count = worker_count
        self._memo: dict[str, int] = {}

    def __call__(self, batch: list[Any]) -> list[list[Any]]:
        parts: list[list[Any]] = [[] for _ in range(self.worker_count)]
        appends = [p.append for p in parts]
        owner_of = self._memo.get
        for item in batch:
            # `aiowax._keys.is_keyed_item`, inlined: a call per item would be
            # a tenth of this loop's cost (tests/test_keys.py holds every
            # inlined copy to the rule). An exact tuple first (unpacking
            # anything else could run user code); unpacking checks the length.
            if type(item) is tuple:
                try:
                    key, _ = item
                except ValueError:
                    key = None
            else:
                key = None
            if type(key) is not str:
                pair = as_keyed_item(item)
                if pair is None:
                    raise StepFailed(bad_item_error(self.step_id, item), parts) from None
                item, key = pair, pair[0]
            owner = owner_of(key)
            if owner is None:
                owner = self._owner(key)
            appends[owner](item)
        return parts

    def _owner(self, key: str) -> int:
        memo = self._memo
        if len(memo) >= _MEMO_LIMIT:
            memo.clear()
        owner = memo[key] = key_owner(key, self.worker_count)
        return owner


def split_by_sink_part(
    step_id: str,
    part_fn: Callable[[str], int],
    part_count: int,
    batch: list[Any],
    buckets: int | None = None,
) -> tuple[dict[int, list[Any]], StepFailed | None]:
    """Group ``(key, value)`` items by the sink partition ``part_fn`` picks.

    Args:
        step_id: The output step, for errors.
        part_fn: The sink's ``part_fn``.
        part_count: How many partitions the sink has.
        batch: The items.
        buckets: Group by ``partition % buckets`` (the worker that owns the
            partition) instead of by partition.

    Returns:
        The items by partition (or bucket), in batch order, up to the first
        bad item or failing ``part_fn``; and then the failure, with the index
        of that item as the length of its ``partial`` (the items before it).
    """
    grouped: dict[int, list[Any]] = {}
    for position, original in enumerate(batch):
        item = as_keyed_item(original)
        if item is None:
            msg = (
                f"output step {step_id!r}: a FixedPartitionedSink needs "
                f"(str key, value) 2-tuples, got {describe(original)}"
            )
            return grouped, StepFailed(TypeError(msg), batch[:position])
        try:
            picked = part_fn(item[0])
        except BaseException as error:
            return grouped, fail(error, step_id, "output part_fn", batch[:position])
        if type(picked) is not int:
            try:
                # Anything with __index__ (numpy's integers) is an int here.
                picked = operator.index(picked)
            except TypeError:
                msg = (
                    f"output step {step_id!r}: the sink's part_fn (DirSink's assign_file) "
                    f"must return an int, the partition's index; for key {item[0]!r} it "
                    f"returned {describe(picked)} ({type(picked).__name__})"
                )
                return grouped, StepFailed(TypeError(msg), batch[:position])
        index = picked % part_count
        if buckets is not None:
            index %= buckets
        grouped.setdefault(index, []).append(item)
    return grouped, None


class PartRouter:
    """Sends each ``(key, value)`` item to the worker owning its sink partition.

    Partition ``i`` of a `FixedPartitionedSink` lives on worker
    ``i % worker_count``; ``part_fn(key) % part_count`` picks the partition.
    """

    def __init__(
        self, step_id: str, part_fn: Callable[[str], int], part_count: int, worker_count: int
    ) -> None:
        self.step_id = step_id
        self.part_fn = part_fn
        self.part_count = part_count
        self.worker_count = worker_count

    def __call__(self, batch: list[Any]) -> list[list[Any]]:
        grouped, failed = split_by_sink_part(
            self.step_id, self.part_fn, self.part_count, batch, self.worker_count
        )
        parts = [grouped.get(w, []) for w in range(self.worker_count)]
        if failed is not None:
            failed.partial = parts
            raise failed
        return parts


class RoundRobin:
    """Splits each batch into even, contiguous slices, rotating the first."""

    def __init__(self, worker_count: int) -> None:
        self.worker_count = worker_count
        self._next = 0

    def __call__(self, batch: list[Any]) -> list[list[Any]]:
        n = self.worker_count
        parts: list[list[Any]] = [[] for _ in range(n)]
        size, extra = divmod(len(batch), n)
        start = 0
        for j in range(n):
            w = (self._next + j) % n
            end = start + size + (1 if j < extra else 0)
            parts[w] = batch[start:end]
            start = end
        self._next = (self._next + max(extra, 1)) % n
        return parts
