"""Checks of the file connectors' arguments and resume states."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeAlias

OnReplaced: TypeAlias = Literal["error", "restart"]


def _check_path(owner: str, name: str, path: object) -> Path:
    if not isinstance(path, str | os.PathLike):
        msg = f"{owner}: {name} must be a str or a path, got {path!r}"
        raise TypeError(msg)
    return Path(path)


def _check_offset(owner: str, path: Path, resume_state: object) -> int:
    if resume_state is None:
        return 0
    if isinstance(resume_state, bool) or not isinstance(resume_state, int):
        msg = (
            f"{owner}: the resume state of {str(path)!r} must be a byte offset "
            f"(an int), got {resume_state!r}"
        )
        raise TypeError(msg)
    if resume_state < 0:
        msg = f"{owner}: the resume state of {str(path)!r} must be >= 0, got {resume_state!r}"
        raise ValueError(msg)
    return resume_state


def _check_end(owner: str, end: object) -> str:
    if not isinstance(end, str):
        msg = f"{owner}: end must be a str, got {end!r}"
        raise TypeError(msg)
    return end


def _check_on_replaced(owner: str, on_replaced: object) -> OnReplaced:
    if on_replaced == "error" or on_replaced == "restart":
        return on_replaced
    msg = f'{owner}: on_replaced must be "error" or "restart", got {on_replaced!r}'
    raise ValueError(msg)
