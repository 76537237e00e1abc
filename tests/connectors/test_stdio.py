"""`StdOutSink`: one line an item, on whatever `sys.stdout` is at the time."""

from __future__ import annotations

from typing import Any

import pytest

from aiowax.connectors.stdio import StdOutSink
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSource, run_main


class _Writes:
    """A stdout that records each write."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass


def test_a_batch_is_one_write_of_one_line_an_item(monkeypatch: pytest.MonkeyPatch) -> None:
    # print() wrote the item and its newline apart: unbuffered (-u,
    # PYTHONUNBUFFERED) the copies of `-p N` sharing a pipe cut each other's
    # lines ("00\n", "\n").
    out = _Writes()
    monkeypatch.setattr("sys.stdout", out)
    items: list[Any] = ["a", 1, None, ("k", 2.5)]
    flow = Dataflow("printing")
    flow.input("inp", TestingSource(items, batch_size=4))
    flow.output("out", StdOutSink())
    run_main(flow)
    assert out.writes == ["a\n1\nNone\n('k', 2.5)\n"]
