"""Control messages that travel in the channels between data batches.

Data travels as plain ``list`` batches; anything else on a channel is one of
these. Because they share the channel with the data, a marker means exactly
"everything before me": the aligned-barrier discipline that epochs,
end-of-input and timer ticks and failures rely on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final


@dataclass(slots=True)
class EpochEnd:
    """Sender ``sender`` has sent everything of epochs up to ``epoch``."""

    epoch: int
    sender: int


@dataclass(slots=True)
class EndOfInput:
    """Sender ``sender`` will send nothing more.

    ``stopped``: it ends because the run is stopping gracefully, not because
    its input ended. With recovery on, steps then keep what they hold (open
    windows, unfinished batches) for the next run instead of flushing it.
    """

    sender: int
    stopped: bool = False


class _Failure:
    """A step upstream failed: finish what came before, then stop."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "FAILURE"


FAILURE: Final = _Failure()


class _Tick:
    """A step's own timer fired: emit what is due (batch timeouts, windows)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "TICK"


TICK: Final = _Tick()

Message = list[Any] | tuple[int, list[Any]] | EpochEnd | EndOfInput | _Failure | _Tick
