"""Argument checks shared by every constructor and builder method.

One checker per rule, so the same mistake gives the same exception type and
the same wording wherever it is made: `TypeError` when the value has the
wrong type, `ValueError` when the type is right but the value is not.
Each takes ``where`` (``"batch step 'b'"``, ``"PushSource"``...), which
starts the message, so the user sees which call was wrong.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any


def positive_int(where: str, name: str, value: object) -> int:
    """Return ``value`` if it is an int of at least 1.

    Raises:
        TypeError: Not an int (a bool does not count).
        ValueError: Zero or negative.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"{where}: {name} must be an int, got {value!r}"
        raise TypeError(msg)
    if value < 1:
        msg = f"{where}: {name} must be positive, got {value!r}"
        raise ValueError(msg)
    return value


def non_empty_str(where: str, name: str, value: object) -> str:
    """Return ``value`` if it is a non-empty str.

    Raises:
        TypeError: Not a str, or empty.
    """
    if not isinstance(value, str) or not value:
        msg = f"{where}: {name} must be a non-empty str, got {value!r}"
        raise TypeError(msg)
    return value


def utf8_text(where: str, name: str, value: str) -> str:
    """Return ``value`` if it encodes as UTF-8 (no lone surrogate).

    Names go into stats, metrics labels and recovery records, all UTF-8: a
    lone surrogate (what `os.fsdecode` makes of a file name that is not
    UTF-8) would fail there, far from the line that made it.

    Raises:
        ValueError: ``value`` holds a lone surrogate.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        msg = (
            f"{where}: {name} {value!r} is not valid Unicode text: {value[error.start]!r} "
            f"at index {error.start} is a lone surrogate (os.fsdecode makes one of a file "
            "name that is not UTF-8); decode such a name with errors='replace', or choose "
            "another"
        )
        raise ValueError(msg) from None
    return value


def timedelta_arg(where: str, name: str, value: object, *, allow_zero: bool) -> timedelta:
    """Return ``value`` if it is a positive (or, with ``allow_zero``, zero) timedelta.

    Raises:
        TypeError: Not a `datetime.timedelta`.
        ValueError: Negative, or zero when ``allow_zero`` is false.
    """
    if not isinstance(value, timedelta):
        msg = f"{where}: {name} must be a datetime.timedelta, got {value!r}"
        raise TypeError(msg)
    if value < timedelta(0) or (not allow_zero and not value):
        rule = "must not be negative" if allow_zero else "must be positive"
        msg = f"{where}: {name} {rule}, got {value!r}"
        raise ValueError(msg)
    return value


def aware_datetime(where: str, name: str, value: object) -> datetime:
    """Return ``value`` in UTC if it is a timezone-aware datetime.

    Raises:
        TypeError: Not a `datetime.datetime`, or a naive one (as Bytewax
            0.17.2 raised for a naive ``align_to``, and as a naive
            ``dt_getter`` result raises).
    """
    if not isinstance(value, datetime):
        msg = f"{where}: {name} must be a datetime.datetime, got {value!r}"
        raise TypeError(msg)
    if value.tzinfo is None or value.utcoffset() is None:
        msg = (
            f"{where}: {name} must be timezone-aware, got the naive {value!r}; "
            "add tzinfo=timezone.utc"
        )
        raise TypeError(msg)
    return value.astimezone(UTC)


def callable_arg(where: str, name: str, value: object) -> Callable[..., Any]:
    """Return ``value`` if it is callable.

    Raises:
        TypeError: Not callable.
    """
    if not callable(value):
        msg = f"{where}: {name} must be callable, got {value!r}"
        raise TypeError(msg)
    return value


def unpicklable_function(fn: object) -> str | None:
    """Say what ``fn`` is if it can never be pickled, else None.

    `pickle` saves a function as its module and qualified name, to be
    imported again where it is loaded; a lambda or a function defined inside
    another one has no such name (also behind `functools.partial`). Whether
    anything else pickles only pickling it tells.
    """
    while isinstance(fn, functools.partial):
        fn = fn.func
    if isinstance(fn, types.FunctionType):
        if fn.__name__ == "<lambda>":
            return "a lambda"
        if "<locals>" in fn.__qualname__:
            return f"{fn.__qualname__!r}, defined inside a function,"
    return None


def describe(obj: object, limit: int = 200) -> str:
    """Return ``repr(obj)`` cut to ``limit`` characters, for error messages.

    Never fails: an error message must not die describing a bad item (an ORM
    row whose ``__repr__`` needs a closed session, say).
    """
    try:
        text = repr(obj)
    except Exception as error:
        text = f"<{type(obj).__qualname__} object (its repr raised {type(error).__name__})>"
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text
