"""The `DeprecationWarning` of a Bytewax 0.17.2 form, pointed at the user's line."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from types import FrameType

# Every frame in here is aiowax's own; the warning names the first one outside.
_PACKAGE = str(Path(__file__).resolve().parents[1]) + os.sep


def deprecated_0172(message: str) -> None:
    """Warn that a Bytewax 0.17.2 form was used, at the user's code that used it.

    The depth from the user's call varies (a method may be reached through
    one wrapper or two), so the stack level is found by walking out of the
    package's own frames rather than fixed.
    """
    frame = sys._getframe(1)
    level = 2
    while frame.f_back is not None and _is_ours(frame):
        frame = frame.f_back
        level += 1
    warnings.warn(message, DeprecationWarning, stacklevel=level)


def _is_ours(frame: FrameType) -> bool:
    return os.path.realpath(frame.f_code.co_filename).startswith(_PACKAGE)
