"""Plain-Python throughput: a list comprehension calling the same two functions.

No engine at all: the floor any stream processor in Python is measured
against. ``--form generator`` (the reference) is
``[y for y in (add_one(x) for x in data) if is_even(y)]``; ``--form map``
is the slightly faster ``[y for y in map(add_one, data) if is_even(y)]``.
``data`` is ``range(items)``, the same iterable the engines read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import benchlib
from benchlib import add_one, is_even


def generator_form(data: Iterable[int]) -> list[int]:
    return [y for y in (add_one(x) for x in data) if is_even(y)]


def map_form(data: Iterable[int]) -> list[int]:
    return [y for y in map(add_one, data) if is_even(y)]


FORMS: dict[str, Callable[[Iterable[int]], list[int]]] = {
    "generator": generator_form,
    "map": map_form,
}


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000)
    p.add_argument("--form", choices=sorted(FORMS), default="generator")
    args = p.parse_args()
    form = FORMS[args.form]
    form(range(min(args.items, 10_000)))  # warm-up
    times, kept = benchlib.time_runs(lambda: len(form(range(args.items))), args.repeat)
    result = benchlib.throughput_result("plain", args.items, None, times, kept)
    result["form"] = args.form
    benchlib.emit(result)


if __name__ == "__main__":
    main()
