"""Window and clock configurations: plain, validated, immutable data.

The operators that use them live in the engine; here we only check that a
configuration makes sense, at the moment it is built.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiowax._util import is_async_callable

_UTC = UTC


def _positive(name: str, cls: str, value: object) -> timedelta:
    if not isinstance(value, timedelta):
        msg = f"{cls}: {name} must be a datetime.timedelta, got {value!r}"
        raise TypeError(msg)
    if value <= timedelta(0):
        msg = f"{cls}: {name} must be positive, got {value!r}"
        raise ValueError(msg)
    return value


def _aware(name: str, cls: str, value: object) -> datetime:
    if not isinstance(value, datetime):
        msg = f"{cls}: {name} must be a datetime.datetime, got {value!r}"
        raise TypeError(msg)
    if value.tzinfo is None or value.utcoffset() is None:
        msg = (
            f"{cls}: {name} must be timezone-aware, got the naive {value!r}; "
            "add tzinfo=timezone.utc"
        )
        raise ValueError(msg)
    return value.astimezone(_UTC)


class ClockConfig:
    """Base of the clock configurations: how a window operator tells time."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class SystemClockConfig(ClockConfig):
    """Item time and watermark are both the current time of the event loop."""


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
        if not callable(self.dt_getter):
            msg = f"EventClockConfig: dt_getter must be callable, got {self.dt_getter!r}"
            raise TypeError(msg)
        wait = self.wait_for_system_duration
        if not isinstance(wait, timedelta):
            msg = (
                "EventClockConfig: wait_for_system_duration must be a "
                f"datetime.timedelta, got {wait!r}"
            )
            raise TypeError(msg)
        if self.on_late is not None and not callable(self.on_late):
            msg = f"EventClockConfig: on_late must be callable, got {self.on_late!r}"
            raise TypeError(msg)
        if self.on_late is not None and is_async_callable(self.on_late):
            # It runs inside the window step's hot loop, which does not await.
            msg = "EventClockConfig: on_late must be a plain function, not async def"
            raise TypeError(msg)
        if wait < timedelta(0):
            msg = f"EventClockConfig: wait_for_system_duration must not be negative, got {wait!r}"
            raise ValueError(msg)


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
        _positive("length", cls, self.length)
        _positive("offset", cls, self.offset)
        object.__setattr__(self, "align_to", _aware("align_to", cls, self.align_to))


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
        _positive("gap", "SessionWindow", self.gap)


@dataclass(frozen=True, slots=True, order=True)
class WindowMetadata:
    """Which window a result belongs to: ``[open_time, close_time)``, in UTC."""

    open_time: datetime
    close_time: datetime
