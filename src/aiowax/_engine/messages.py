"""Control messages that travel in the channels between data batches.

Data travels as plain ``list`` batches; anything else on a channel is one of
these. Because they share the channel with the data, a marker means exactly
"everything before me": the aligned-barrier discipline that epochs,
end-of-input and timer ticks and failures rely on.
"""

from __future__ import annotations

from typing import Any, Final


class EpochEnd:
    """Sender ``sender`` has sent everything of epochs up to ``epoch``."""

    __slots__ = ("epoch", "sender")

    def __init__(self, epoch: int, sender: int) -> None:
        self.epoch = epoch
        self.sender = sender

    def __repr__(self) -> str:
        return f"EpochEnd(epoch={self.epoch}, sender={self.sender})"


class EndOfInput:
    """Sender ``sender`` will send nothing more."""

    __slots__ = ("sender",)

    def __init__(self, sender: int) -> None:
        self.sender = sender

    def __repr__(self) -> str:
        return f"EndOfInput(sender={self.sender})"


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
