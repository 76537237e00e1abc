"""Keys: the stable hash that places them, and the check of ``(key, value)`` items.

Every placement by key goes through `stable_hash`: the worker that owns a
key (`key_owner`), the default partition of a `FixedPartitionedSink`, and
the recovery partition file that stores a key's state. It is a CRC-32 of the
UTF-8 text, not the built-in ``hash``, which Python salts per process:
state must land on the same worker and file in every process and run.

Keyed steps need ``(key, value)`` 2-tuples with a str key. The common case,
an exact tuple and an exact str (`is_keyed_item`), is checked inline in the
hot loops; anything else goes through `as_keyed_item`, which accepts what
the reference accepts (tuple subclasses such as namedtuples, str subclasses
such as StrEnum members) as the plain pair of the key's str value.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any, cast
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
    """Whether ``item`` is an exact ``(str, value)`` 2-tuple: the fast case."""
    return type(item) is tuple and len(item) == 2 and type(item[0]) is str


def as_keyed_item(item: object) -> tuple[str, Any] | None:
    """``item`` as a plain ``(str, value)`` pair, or None if it cannot be one.

    A tuple subclass (a namedtuple) of two, whose key is a str subclass (a
    StrEnum member, a ``class UserId(str)``), becomes the plain pair of the
    key's str value, so it hashes, routes and is stored like that str. The
    tuple's and the str's own methods are not called: no user code runs.
    The real type is looked at, not ``__class__``, which a proxy or a mock
    (``Mock(spec=tuple)``) may fake: such an item is refused.
    """
    if type(item) is tuple and len(item) == 2 and type(item[0]) is str:
        return item
    if not issubclass(type(item), tuple):
        return None
    pair = cast("tuple[Any, ...]", item)
    if tuple.__len__(pair) != 2:
        return None
    key, value = tuple.__getitem__(pair, 0), tuple.__getitem__(pair, 1)
    if not issubclass(type(key), str):
        return None
    return (str.__str__(key), value)


def all_keyed_items(batch: list[Any]) -> bool:
    """Whether every item of ``batch`` is an exact pair, proved in C-level passes."""
    # Each pass only runs once the one before proved it safe: len() only on
    # exact tuples, and [0] only on tuples of length 2 (no user code runs).
    return (
        set(map(type, batch)) <= _TUPLE
        and set(map(len, batch)) <= _TWO
        and set(map(type, map(_first, batch))) <= _STR
    )


def bad_item_error(step_id: str, item: object) -> TypeError:
    """The error for an item a keyed step cannot use."""
    what = describe(item)
    if issubclass(type(item), tuple):
        pair = cast("tuple[Any, ...]", item)
        if tuple.__len__(pair) == 2:
            what += f" (a key of type {type(tuple.__getitem__(pair, 0)).__name__})"
    return TypeError(f"step {step_id!r} needs (key, value) 2-tuples with a str key, got {what}")
