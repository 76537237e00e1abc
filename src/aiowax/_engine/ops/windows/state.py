"""One key's watermark and open windows.

Times are integer microseconds since the Unix epoch (UTC), never floats.
Each key has its own watermark: the newest item time seen minus the allowed
lateness, advancing with the event loop's clock while the key is idle: it is
``wm_base`` at loop time ``wm_loop`` (in whole microseconds, `loop_us`). A
key whose windows have all closed is dropped at once; only its watermark
stays behind, in a bounded memo (`FORGOTTEN_WATERMARKS`), so that a late
item of that key is still recognised as late.

Memory matters here: a step can hold a state for each of 100,000s of keys.
A key whose only session holds one item (the common case when keys are
many: the session-memory benchmark) costs one `KeyState` and nothing else:
the item sits in its slots, its time is the watermark's own int, and the
loop time is the int of its batch, which every key of the batch shares. A
key of a tumbling window step with one window open (most of the time, for
most keys) keeps it in the same two slots, without a dict of windows (a
dict of one entry costs 224 bytes, twice the `KeyState`).
"""

from __future__ import annotations

from typing import Any

#: Forgotten keys (all windows closed) whose watermark a step remembers, per
#: worker: about 130 bytes each (the key, an int and a dict entry). Past it
#: the oldest go, an eighth of the bound at a time, and a late item of such a
#: key would open its window anew instead of being counted late.
FORGOTTEN_WATERMARKS = 100_000

#: The accumulator of a window that has no value yet.
MISSING: Any = object()

#: A session, flat: ``[start, end, t, seq, value, t, seq, value, ...]``, one
#: ``(time, seq, value)`` triple per item in arrival order; ``seq`` counts
#: the key's items (it orders the items of sessions that merge).
Session = list[Any]

#: The windows of a state that has none: shared, never written (a sliding
#: window step gives each of its states its own dict; see `WindowOp.key_state`).
NO_WINDOWS: dict[int, Any] = {}

#: The sessions of a state that has none in a list: shared, never written (see
#: `KeyState.join_session`).
NO_SESSIONS: list[Session] = []


class Folded:
    """A session's first items, already folded: the first entry of its list.

    A key whose only session goes on and on (it never pauses for ``gap``)
    would keep every item until the session closes. Its items can be
    folded early (`WindowOp.compact`): any session it may later merge with
    is newer, and merged items are folded in arrival order, so these come
    first in any case. The entry keeps the newest folded item's time and
    ``seq``, which sorts it before every item that comes after.
    """

    __slots__ = ("acc",)

    def __init__(self, acc: Any) -> None:
        self.acc = acc

    def __repr__(self) -> str:
        return f"Folded({self.acc!r})"


def due_keys(entry: list[str] | str) -> list[str]:
    """The keys of a timer entry of a window step: a list of them, or one key alone."""
    return [entry] if isinstance(entry, str) else entry


def loop_us(now: float) -> int:
    """Loop time ``now`` in whole microseconds."""
    return round(now * 1e6)


class KeyState:
    """One key's watermark and open windows.

    A key's sessions are either one session of one item, in ``one_at`` (the
    item's time) and ``one_value`` (``one_at`` is None otherwise), or in
    ``sessions``, in time order and at least a gap apart.

    A key's tumbling or sliding windows are in ``windows`` (index ->
    accumulator), except that a state whose ``windows`` is the shared empty
    `NO_WINDOWS` may hold one window in ``one_at`` (its index) and
    ``one_value`` (`put_window` moves it into a dict of its own once a
    second one opens). Sliding window steps give each state a dict of its
    own from the start (`WindowOp.key_state`): their hot loops write it.
    """

    __slots__ = (
        "deadline",
        "n",
        "one_at",
        "one_value",
        "sessions",
        "windows",
        "wm_base",
        "wm_loop",
    )

    def __init__(self, wm_base: int, wm_loop: int) -> None:
        # The watermark is ``wm_base`` at loop time ``wm_loop`` (µs).
        self.wm_base = wm_base
        self.wm_loop = wm_loop
        # Tumbling and sliding windows: index -> accumulator (see the class).
        self.windows = NO_WINDOWS
        # A lone session or window (see the class).
        self.one_at: int | None = None
        self.one_value: Any = None
        self.sessions = NO_SESSIONS
        # The ``seq`` of the key's next item (in ``sessions``).
        self.n = 0
        # The loop time of this key's entry in the step's timers.
        self.deadline: float | None = None

    def watermark(self, now: float) -> int:
        """The watermark at loop time ``now``."""
        return self.wm_base + round(now * 1e6) - self.wm_loop

    def forgotten(self) -> int:
        """The watermark as the memo keeps it: ``KeyState(kept, 0)`` has it back."""
        return self.wm_base - self.wm_loop

    def advance(self, now_us: int, t_us: int, wait_us: int) -> None:
        """An item at ``t_us`` arrived at loop time ``now_us`` (µs)."""
        candidate = t_us - wait_us if wait_us else t_us
        if candidate > self.wm_base + now_us - self.wm_loop:
            self.wm_base = candidate
            self.wm_loop = now_us

    def deadline_of(self, close_us: int) -> float:
        """Loop time at which the watermark reaches ``close_us``."""
        return (close_us - self.wm_base + self.wm_loop) / 1e6

    def open_count(self) -> int:
        """How many windows or sessions are open."""
        return len(self.windows) + len(self.sessions) + (self.one_at is not None)

    # -- tumbling and sliding windows (see the class) ----------------------------

    def window_table(self) -> dict[int, Any]:
        """Every open window, index -> accumulator (a new dict for a lone window)."""
        if self.one_at is not None:
            return {self.one_at: self.one_value}
        return self.windows

    def get_window(self, index: int, default: Any) -> Any:
        """The accumulator of window ``index``, or ``default`` if it is not open."""
        if self.one_at == index:
            return self.one_value
        return self.windows.get(index, default)

    def put_window(self, index: int, acc: Any) -> None:
        """Set the accumulator of window ``index``, opening it if need be."""
        if self.one_at == index:
            self.one_value = acc
        elif self.windows is not NO_WINDOWS:
            self.windows[index] = acc
        elif self.one_at is None:
            self.one_at, self.one_value = index, acc
        else:
            # A second window: both go in a dict of the state's own.
            self.windows = {self.one_at: self.one_value, index: acc}
            self.one_at = self.one_value = None

    def pop_window(self, index: int) -> Any:
        """Take out the accumulator of the open window ``index``."""
        if self.one_at == index:
            acc = self.one_value
            self.one_at = self.one_value = None
            return acc
        return self.windows.pop(index)

    def first_window(self) -> int | None:
        """The index of the oldest open window (the first to close), None if none."""
        if self.one_at is not None:
            return self.one_at
        windows = self.windows
        return min(windows) if windows else None

    def make_lone(self) -> None:
        """A dict of windows down to one: that one goes back in the slots (tumbling)."""
        windows = self.windows
        if len(windows) == 1:
            ((self.one_at, self.one_value),) = windows.items()
            self.windows = NO_WINDOWS

    # -- sessions ------------------------------------------------------------------

    def all_sessions(self) -> list[Session]:
        """Every session, flat (see `Session`), in time order."""
        if self.one_at is not None:
            return [[self.one_at, self.one_at, self.one_at, 0, self.one_value]]
        return self.sessions

    def take_sessions(self, gap_us: int, now: float) -> list[Session]:
        """Take out the sessions that close at loop time ``now``."""
        if self.one_at is not None:
            if self.deadline_of(self.one_at + gap_us) > now:
                return NO_SESSIONS
            taken = self.all_sessions()
            self.one_at = self.one_value = None
            return taken
        sessions = self.sessions
        # In time order, a gap apart: those due come first.
        done, left = 0, len(sessions)
        while done < left and self.deadline_of(sessions[done][1] + gap_us) <= now:
            done += 1
        if not done:
            return NO_SESSIONS
        self.sessions = sessions[done:] if done < left else NO_SESSIONS
        return sessions[:done]

    def join_session(self, gap_us: int, t_us: int, value: Any) -> None:
        """Add an item to its session, merging those it bridges."""
        if self.one_at is None:
            if not self.sessions:
                # A key's first session, of one item (the common case).
                self.one_at, self.one_value = t_us, value
                return
        else:
            # A second item: the lone one becomes a session in the list.
            self.sessions = self.all_sessions()
            self.one_at = self.one_value = None
            self.n = 1
        seq = self.n
        self.n = seq + 1
        sessions = self.sessions
        if not sessions:
            self.sessions = [[t_us, t_us, t_us, seq, value]]
            return
        last = sessions[-1]
        if t_us >= last[1] + gap_us:
            # After every session (the common case, in order): a new one.
            sessions.append([t_us, t_us, t_us, seq, value])
            return
        if last[0] - gap_us < t_us and (len(sessions) == 1 or t_us >= sessions[-2][1] + gap_us):
            # In the last session only (the common case, one session).
            if t_us < last[0]:
                last[0] = t_us
            elif t_us > last[1]:
                last[1] = t_us
            last += (t_us, seq, value)
            return
        joined = [i for i, s in enumerate(sessions) if s[0] - gap_us < t_us < s[1] + gap_us]
        if not joined:
            # Between two sessions, apart from both.
            at = next(i for i, s in enumerate(sessions) if s[0] > t_us)
            sessions.insert(at, [t_us, t_us, t_us, seq, value])
            return
        first = sessions[joined[0]]
        if len(joined) > 1:
            # It bridges sessions: one, its items in arrival order.
            merged = [(t_us, seq, value)]
            for i in joined:
                s = sessions[i]
                merged += zip(s[2::3], s[3::3], s[4::3], strict=True)
            merged.sort(key=lambda entry: entry[1])
            first[1] = sessions[joined[-1]][1]
            del first[2:]
            for entry in merged:
                first += entry
            del sessions[joined[0] + 1 : joined[-1] + 1]
        else:
            first += (t_us, seq, value)
        first[0] = min(first[0], t_us)
        first[1] = max(first[1], t_us)


def session_entries(session: Session) -> list[tuple[int, int, Any]]:
    """The ``(time, seq, value)`` items of a session, in arrival order."""
    return list(zip(session[2::3], session[3::3], session[4::3], strict=True))
