"""One key's watermark and open windows.

Times are integer microseconds since the Unix epoch (UTC), never floats.
Each key has its own watermark: the newest item time seen minus the allowed
lateness, advancing with the event loop's clock while the key is idle. A
key whose windows have all closed is dropped at once; only its watermark
stays behind, in a bounded memo (`FORGOTTEN_WATERMARKS`), so that a late
item of that key is still recognised as late.
"""

from __future__ import annotations

from typing import Any

#: Forgotten keys (all windows closed) whose watermark a step remembers, per
#: worker: about 150 bytes each. Past it the oldest go, and a late item of
#: such a key would open its window anew instead of being counted late.
FORGOTTEN_WATERMARKS = 100_000

#: The accumulator of a window that has no value yet.
MISSING: Any = object()


class KeyState:
    """One key's watermark and open windows."""

    __slots__ = ("deadline", "sessions", "windows", "wm_base", "wm_loop")

    def __init__(self, wm_base: int, wm_loop: float) -> None:
        # Watermark at loop time ``wm_loop``; it then advances with the loop.
        self.wm_base = wm_base
        self.wm_loop = wm_loop
        # Sliding windows: window index -> accumulator.
        self.windows: dict[int, Any] = {}
        # Sessions: [start, end, [(time, seq, value), ...]] sorted by start.
        self.sessions: list[list[Any]] = []
        # The loop time of this key's entry in the step's timer heap.
        self.deadline: float | None = None

    def watermark(self, now: float) -> int:
        """The watermark at loop time ``now``."""
        return self.wm_base + round((now - self.wm_loop) * 1e6)

    def advance(self, now: float, t_us: int, wait_us: int) -> None:
        """An item at ``t_us`` arrived at loop time ``now``."""
        wm = max(self.watermark(now), t_us - wait_us)
        self.wm_base, self.wm_loop = wm, now

    def deadline_of(self, close_us: int) -> float:
        """Loop time at which the watermark reaches ``close_us``."""
        return self.wm_loop + (close_us - self.wm_base) / 1e6

    def join_session(self, gap_us: int, entry: tuple[int, int, Any]) -> None:
        """Add ``entry`` (time, seq, value) to its session, merging those it bridges."""
        t_us = entry[0]
        joined = [s for s in self.sessions if s[0] - gap_us < t_us < s[1] + gap_us]
        if not joined:
            self.sessions.append([t_us, t_us, [entry]])
            self.sessions.sort(key=lambda s: s[0])
            return
        first = joined[0]
        for other in joined[1:]:
            first[0] = min(first[0], other[0])
            first[1] = max(first[1], other[1])
            first[2].extend(other[2])
            self.sessions.remove(other)
        first[0] = min(first[0], t_us)
        first[1] = max(first[1], t_us)
        first[2].append(entry)
