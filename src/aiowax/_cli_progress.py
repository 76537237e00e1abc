"""The command line's progress line and its logging set-up.

On a terminal, a run that lasts longer than a couple of seconds gets one
line on stderr, rewritten every second: items read and written, their
rates, the source lag when the sources know it, the epoch. stdout is never
touched: a flow's `StdOutSink` owns it. Log records (``--log-level``) go to
stderr too; the progress line is cleared before each one and redrawn at the
next tick, so the two never garble each other.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, TextIO

import anyio

from aiowax._embed import FlowHandle
from aiowax._stats.model import FlowStats

#: Levels ``--log-level`` takes.
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: Seconds before the first progress line: short runs print none.
FIRST_AFTER_S = 2.0
#: Seconds between two progress lines.
EVERY_S = 1.0
_CLEAR = "\r\x1b[K"


class ProgressLine:
    """The one line of progress on a terminal, and what erases it."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.shown = False
        self._last: tuple[float, int, int] | None = None

    def clear(self) -> None:
        """Erase the line (before a log record or at the end)."""
        if self.shown:
            self._stream.write(_CLEAR)
            self._stream.flush()
            self.shown = False

    def show(self, stats: FlowStats) -> None:
        """Draw the line for ``stats``, with rates since the previous one.

        Cut to the terminal's width: a line that wraps cannot be erased
        (the erasing only reaches its last row), so every redraw would
        leave a copy behind.
        """
        text = self.text(stats)
        try:
            width = os.get_terminal_size(self._stream.fileno()).columns
        except (AttributeError, OSError, ValueError):
            width = 0
        if width > 1 and len(text) >= width:
            text = text[: width - 2] + "…"
        self._stream.write(_CLEAR + text)
        self._stream.flush()
        self.shown = True

    def text(self, stats: FlowStats) -> str:
        """The line for ``stats`` (rates since the previous call)."""
        read = sum(s.items_in for s in stats.steps if s.kind == "input")
        written = sum(s.items_out for s in stats.steps if s.kind == "output")
        lags = [s.lag for s in stats.steps if s.kind == "input" and s.lag is not None]
        now = stats.uptime_s
        read_rate = written_rate = ""
        if self._last is not None and now > self._last[0]:
            elapsed = now - self._last[0]
            read_rate = f" ({(read - self._last[1]) / elapsed:,.0f}/s)"
            written_rate = f" ({(written - self._last[2]) / elapsed:,.0f}/s)"
        self._last = (now, read, written)
        parts = [
            f"aiowax: {stats.name} {stats.status} {_duration(now)}",
            f"read {read:,}{read_rate}",
            f"written {written:,}{written_rate}",
        ]
        if lags:
            parts.append(f"lag {sum(lags):,}")
        parts.append(f"epoch {stats.epoch}")
        if stats.restoring:
            parts.append("restoring state")
        return " | ".join(parts)


def _duration(seconds: float) -> str:
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def progress(line: ProgressLine) -> Callable[[FlowHandle], Coroutine[Any, Any, None]]:
    """The companion of a command-line run that keeps ``line`` up to date."""

    async def show(handle: FlowHandle) -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(report_progress, handle.stats, line)
            with contextlib.suppress(Exception):
                await handle.wait()
            tg.cancel_scope.cancel()

    return show


async def report_progress(
    stats: Callable[[], FlowStats],
    line: ProgressLine,
    *,
    first_after: float = FIRST_AFTER_S,
    every: float = EVERY_S,
) -> None:
    """Redraw ``line`` every ``every`` seconds from ``first_after`` on, until cancelled."""
    try:
        await anyio.sleep(first_after)
        while True:
            line.show(stats())
            await anyio.sleep(every)
    finally:
        line.clear()


class _Erasing:
    """A text stream on the line's terminal that erases the line before it writes.

    Stands for `sys.stderr` (and `sys.stdout` on the same terminal) during
    a run: the command line's own messages, a `StdOutSink`'s items, warnings
    and other libraries' output would otherwise go on at the end of the line.
    """

    def __init__(self, stream: TextIO, line: ProgressLine) -> None:
        self._stream = stream
        self._line = line

    def write(self, text: str) -> int:
        if text and self._line.shown:
            self._line.clear()
        return self._stream.write(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for text in lines:
            self.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _same_terminal(a: TextIO, b: TextIO) -> bool:
    try:
        return a.isatty() and os.path.samestat(os.fstat(a.fileno()), os.fstat(b.fileno()))
    except (AttributeError, OSError, ValueError):
        return False


@contextlib.contextmanager
def erasing(line: ProgressLine | None) -> Iterator[None]:
    """While inside, writes to stderr (and to stdout on its terminal) erase ``line`` first."""
    if line is None:
        yield
        return
    saved = sys.stdout, sys.stderr
    sys.stderr = _Erasing(sys.stderr, line)
    if _same_terminal(saved[0], saved[1]):
        sys.stdout = _Erasing(sys.stdout, line)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def configure_logging(level: str | None, stream: TextIO, line: ProgressLine | None) -> None:
    """Send the ``aiowax`` logger's records at ``level`` and above to ``stream``.

    Without ``--log-level``, warnings and errors, as Python would print
    them, unless the flow's module set logging up itself (then nothing
    changes); with it, records at that level get a time and the logger's
    name. Either way the progress line is erased before a record.
    """
    if level is None and logging.getLogger().handlers:
        return  # the flow's module set logging up: leave it as it is
    logger = logging.getLogger("aiowax")
    # Through the same erasing stream as the run's stderr.
    handler = logging.StreamHandler(stream if line is None else _Erasing(stream, line))
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        if level is not None
        else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    logger.addHandler(handler)
    logger.setLevel(getattr(logging, (level or "warning").upper()))
    # The handler above prints them: the root logger's would print twice.
    logger.propagate = False
