"""Partition names of the file sources: ``f"{fs_id}::{path}"``."""

from __future__ import annotations

from collections.abc import Callable
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
