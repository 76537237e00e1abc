"""A file source's position, and how to tell that the file at its path was replaced.

A position records which file it was taken in: its device and inode, its
size, and a hash of its first and last ``_WINDOW`` bytes before the offset.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TypeAlias, TypedDict

from aiowax._connectors.files.checks import _check_offset

#: Bytes hashed at each end of what a source has read, to recognise the file.
_WINDOW = 4096


class FilePosition(TypedDict):
    """A file source's snapshot: where it stands, and the file it stands in.

    Plain data (ints and a str), so any snapshot serde can store it.
    """

    offset: int
    """Bytes handed out: the next line or record starts here."""
    size: int
    """The file's size when ``offset`` was reached."""
    dev: int
    """``st_dev`` of the file read."""
    ino: int
    """``st_ino`` of the file read."""
    digest: str
    """BLAKE2b (16 bytes, hex) of the first and the last ``_WINDOW`` bytes before ``offset``."""


#: A source partition's resume state; a plain int is the older format.
FileState: TypeAlias = FilePosition | int

_POSITION_INTS = ("offset", "size", "dev", "ino")


def _check_state(owner: str, path: Path, resume_state: object) -> FileState | None:
    if not isinstance(resume_state, dict):
        # None, or an offset saved before positions named their file.
        return None if resume_state is None else _check_offset(owner, path, resume_state)
    fields = [resume_state.get(key) for key in _POSITION_INTS]
    ints = [v for v in fields if isinstance(v, int) and not isinstance(v, bool)]
    digest = resume_state.get("digest")
    if len(ints) != len(fields) or not isinstance(digest, str):
        msg = (
            f"{owner}: the resume state of {str(path)!r} must be a byte offset or a "
            f"position taken by snapshot() (keys offset, size, dev, ino, digest), "
            f"got {resume_state!r}"
        )
        raise TypeError(msg)
    offset, size, dev, ino = ints
    _check_offset(owner, path, offset)
    return FilePosition(offset=offset, size=size, dev=dev, ino=ino, digest=digest)


def _offset(state: FileState) -> int:
    return state if isinstance(state, int) else state["offset"]


def _make_position(
    st: os.stat_result, offset: int, head: bytes, tail: bytes, size: int | None = None
) -> FilePosition:
    """The position at ``offset`` in a file with ``st``, its first and last bytes before it.

    ``size`` is the file's size when not ``st``'s (a sink's file, which grew).
    """
    return FilePosition(
        offset=offset,
        size=st.st_size if size is None else size,
        dev=st.st_dev,
        ino=st.st_ino,
        digest=hashlib.blake2b(head + tail, digest_size=16).hexdigest(),
    )


@dataclass(frozen=True, slots=True)
class _Cursor:
    """A partition's position; a new one per batch, so a cancelled read changes nothing."""

    offset: int
    #: What `snapshot` returns.
    state: FileState
    #: The file's first ``min(offset, _WINDOW)`` bytes, kept so they are read
    #: only once; ``None`` until the file was checked against ``state``.
    head: bytes | None


def _what_changed(saved: FileState, now: FilePosition) -> str | None:
    """Say how the file differs from the one ``saved`` was taken in, or ``None``."""
    offset = now["offset"]
    if isinstance(saved, int):
        # An old-format offset: no identity to compare, but a file shorter
        # than what was read from it is certainly another one.
        if now["size"] < offset:
            return (
                f"it now has {now['size']} bytes, fewer than the {offset} already read "
                "(the saved position is a plain offset from an older aiowax, so only "
                "the size could be checked)"
            )
        return None
    if now["size"] < offset:
        change = (
            f"it now has {now['size']} bytes, fewer than the {offset} already read "
            f"(it had {saved['size']} then)"
        )
    elif now["digest"] != saved["digest"]:
        change = (
            f"its bytes before that offset differ from those read then (it had "
            f"{saved['size']} bytes then, {now['size']} now)"
        )
    else:
        # The bytes read are still there: the same file, grown or not, or a
        # copy of it (restored from a backup, moved to another disk).
        return None
    if (now["dev"], now["ino"]) == (saved["dev"], saved["ino"]):
        return f"{change}; it is the same file (inode {saved['ino']}) rewritten in place"
    return (
        f"{change}; it is another file (device {saved['dev']}, inode {saved['ino']} then; "
        f"device {now['dev']}, inode {now['ino']} now), as after a log rotation or a "
        "regenerated export"
    )
