"""Running word counts: the first flow of the getting-started guide.

    python -m aiowax docs/examples/wordcount.py
"""

from aiowax.connectors.stdio import StdOutSink
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSource

LINES = ["the cat sat", "the dog sat down", "a cat ran"]


def count(total, one):
    """Add one to a word's running total; emit the new total."""
    total += one
    return total, total


flow = Dataflow("wordcount")
flow.input("lines", TestingSource(LINES))
flow.flat_map("words", str.split)
flow.map("key", lambda word: (word, 1))
flow.stateful_map("count", lambda: 0, count)
flow.output("print", StdOutSink())
