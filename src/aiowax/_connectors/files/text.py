"""UTF-8 text in binary files: splitting lines, and saying where decoding failed."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_ENCODING = "utf-8"


def _note_position(error: BaseException, path: Path, offset: int) -> None:
    error.add_note(f"while reading {str(path)!r} near byte offset {offset}")


def _split_lines(data: bytes) -> list[str]:
    """Decode whole lines and split them at universal newlines, dropping the breaks."""
    text = data.decode(_ENCODING)
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if not lines[-1]:
        lines.pop()  # the data ended with a line break, not a partial line
    return lines


class _RawLines(Iterator[str]):
    """The lines of a binary file, with their breaks, for the `csv` module.

    Splits like a text file opened with ``newline=""`` (what `csv` expects)
    and knows the byte offset after the last line it handed out.
    """

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.offset = 0
        self._split: deque[tuple[str, int]] = deque()

    def seek(self, offset: int) -> None:
        self._f.seek(offset)
        self.offset = offset
        self._split.clear()

    def __next__(self) -> str:
        if self._split:
            line, self.offset = self._split.popleft()
            return line
        raw = self._f.readline()
        if not raw:
            raise StopIteration
        start = self.offset
        if b"\r" in raw:
            parts = raw.splitlines(keepends=True)  # a lone "\r" ends a line too
            if len(parts) > 1:
                for part in parts:
                    start += len(part)
                    self._split.append((part.decode(_ENCODING), start))
                line, self.offset = self._split.popleft()
                return line
        self.offset = start + len(raw)
        return raw.decode(_ENCODING)
