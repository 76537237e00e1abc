"""Keys: the stable hash that places them, and the check of ``(key, value)`` items.

Every placement by key goes through `stable_hash`: the worker that owns a
key (`key_owner`), the default partition of a `FixedPartitionedSink`, and
the recovery partition file that stores a key's state. It is a CRC-32 of the
UTF-8 text, not the built-in ``hash``, which Python salts per process:
state must land on the same worker and file in every process and run.

Keyed steps need ``(str, value)`` 2-tuples. `first_bad_item` checks a whole
batch in a few C-level passes, so the hot loops of the keyed steps need no
per-item check of their own.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any
from zlib import crc32

from aiowax._checks import describe

_TUPLE = frozenset({tuple})
_TWO = frozenset({2})
_STR = frozenset({str})
_first = itemgetter(0)


def stable_hash(text: str) -> int:
    """A hash of ``text`` that is the same in every process and run."""
    return crc32(text.encode("utf-8", "surrogatepass"))


def key_owner(key: str, worker_count: int) -> int:
    """The worker that owns ``key``: the same in every process and run."""
    return stable_hash(key) % worker_count


def is_keyed_item(item: object) -> bool:
    """Whether ``item`` is a ``(str, value)`` 2-tuple (subclasses refused)."""
    return type(item) is tuple and len(item) == 2 and type(item[0]) is str


def first_bad_item(batch: list[Any]) -> int | None:
    """The index of the first item of ``batch`` that is not a ``(str, value)`` pair.

    Returns:
        None when every item is one. The passes run in C; only a batch with
        a bad item is scanned item by item, to find it.
    """
    # Each pass only runs once the one before proved it safe: len() only on
    # exact tuples, and [0] only on tuples of length 2 (no user code runs).
    if (
        set(map(type, batch)) <= _TUPLE
        and set(map(len, batch)) <= _TWO
        and set(map(type, map(_first, batch))) <= _STR
    ):
        return None
    for index, item in enumerate(batch):
        if not is_keyed_item(item):
            return index
    return None  # pragma: no cover - one of the passes above found a bad item


def bad_item_error(step_id: str, item: object) -> TypeError:
    """The error for an item a keyed step cannot use."""
    return TypeError(
        f"step {step_id!r} needs (key, value) 2-tuples with a str key, got {describe(item)}"
    )
