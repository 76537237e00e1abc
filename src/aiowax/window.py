"""Windowing configurations: clocks, windowers and window metadata."""

from aiowax._definition.window import (
    ClockConfig,
    EventClockConfig,
    SessionWindow,
    SlidingWindow,
    SystemClockConfig,
    TumblingWindow,
    WindowConfig,
    WindowMetadata,
)
from aiowax._util import fixup_module_metadata

__all__ = [
    "ClockConfig",
    "EventClockConfig",
    "SessionWindow",
    "SlidingWindow",
    "SystemClockConfig",
    "TumblingWindow",
    "WindowConfig",
    "WindowMetadata",
]

fixup_module_metadata(__name__, __all__, globals())
