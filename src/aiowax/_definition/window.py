"""Window and clock configurations: plain, validated, immutable data.

The operators that use them live in the engine; here we only check that a
configuration makes sense, at the moment it is built.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from aiowax._checks import aware_datetime, callable_arg, timedelta_arg
from aiowax._util import is_async_callable


class ClockConfig:
    """Base of the clock configurations: how a window operator tells time."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class SystemClockConfig(ClockConfig):
    """Item time and watermark are both the current time: no item is ever late.

    The wall clock, but never behind the time the step has reached (a clock
    stepped back gives items the step's time instead).
    """


@dataclass(frozen=True, slots=True)
class EventClockConfig(ClockConfig):
    """Item time comes from the item itself.

    Args:
        dt_getter: ``dt_getter(value) -> datetime``, a timezone-aware time for
            each value; may be ``async def``.
        wait_for_system_duration: How long to keep accepting items older than
            the newest one seen, before their windows close.
        on_late: Optional ``on_late(key, value, item_time, watermark)``,
            called for every item dropped because its window had already
            closed (beyond the reference). Late items are also counted per
            step and logged at debug level on the ``aiowax.window`` logger.
    """

    dt_getter: Callable[[Any], datetime | Awaitable[datetime]]
    wait_for_system_duration: timedelta = field(default=timedelta(0))
    on_late: Callable[[str, Any, datetime, datetime], Any] | None = field(
        default=None, kw_only=True
    )

    def __post_init__(self) -> None:
        where = "EventClockConfig"
        callable_arg(where, "dt_getter", self.dt_getter)
        wait = self.wait_for_system_duration
        timedelta_arg(where, "wait_for_system_duration", wait, allow_zero=True)
        if self.on_late is not None:
            callable_arg(where, "on_late", self.on_late)
            if is_async_callable(self.on_late):
                # It runs inside the window step's hot loop, which does not await.
                msg = f"{where}: on_late must be a plain function, not async def"
                raise TypeError(msg)


class WindowConfig:
    """Base of the windower configurations: which windows an item falls in."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class SlidingWindow(WindowConfig):
    """Windows ``[align_to + k*offset, align_to + k*offset + length)``.

    An ``offset`` shorter than ``length`` makes windows overlap; a longer one
    leaves gaps that no window covers.

    Args:
        length: Length of every window.
        offset: Time between the starts of consecutive windows.
        align_to: An instant at which a window starts (timezone-aware).
    """

    length: timedelta
    offset: timedelta
    align_to: datetime

    def __post_init__(self) -> None:
        cls = type(self).__name__
        timedelta_arg(cls, "length", self.length, allow_zero=False)
        timedelta_arg(cls, "offset", self.offset, allow_zero=False)
        object.__setattr__(self, "align_to", aware_datetime(cls, "align_to", self.align_to))


class TumblingWindow(SlidingWindow):
    """Back-to-back windows of one length: each time falls in exactly one.

    Args:
        length: Length of every window.
        align_to: An instant at which a window starts (timezone-aware).
    """

    __slots__ = ()

    def __init__(self, length: timedelta, align_to: datetime) -> None:
        super().__init__(length, length, align_to)

    def __repr__(self) -> str:
        return f"TumblingWindow(length={self.length!r}, align_to={self.align_to!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (TumblingWindow, (self.length, self.align_to))


@dataclass(frozen=True, slots=True)
class SessionWindow(WindowConfig):
    """Items of a key closer together than ``gap`` share one window.

    Args:
        gap: The silence that ends a session.
    """

    gap: timedelta

    def __post_init__(self) -> None:
        timedelta_arg("SessionWindow", "gap", self.gap, allow_zero=False)


@dataclass(frozen=True, slots=True, order=True)
class WindowMetadata:
    """Which window a result belongs to: ``[open_time, close_time)``, in UTC."""

    open_time: datetime
    close_time: datetime
