"""Partition names of the file sources: ``f"{fs_id}::{path}"``."""

from __future__ import annotations

from collections.abc import Callable, Set
from pathlib import Path


def _get_path_dev(path: Path) -> str:
    """Return the device id of ``path`` in hex: the default ``get_fs_id``, as the reference."""
    return hex(path.stat().st_dev)


def _fs_id(owner: str, get_fs_id: Callable[[Path], str], directory: Path) -> str:
    fs_id = get_fs_id(directory)
    if not isinstance(fs_id, str):
        msg = f"{owner}: get_fs_id must return a str, got {fs_id!r}"
        raise TypeError(msg)
    if "::" in fs_id:
        # "::" separates the id from the path in partition names.
        msg = f"{owner}: the result of get_fs_id must not contain '::', got {fs_id!r}"
        raise ValueError(msg)
    return fs_id


def _moved_partition(saved: str, names: Set[str]) -> str | None:
    """The partition that a snapshot of ``saved`` belongs to now, if only its fs id changed.

    The default fs id, the device number of the file's directory, may change
    when a volume is mounted again (a new container, a reboot): the same
    path under a new id is the same partition. The engine asks this of a
    source (as ``_aiowax_partition_moved``) for snapshots that match no
    partition; the source's own check of the file (size, inode, bytes)
    still refuses a file that was replaced.
    """
    if "::" not in saved:
        return None
    path = saved.split("::", 1)[1]
    moved = [name for name in names if "::" in name and name.split("::", 1)[1] == path]
    return moved[0] if len(moved) == 1 else None
