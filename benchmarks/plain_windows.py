"""Plain-Python windows: a dict keyed by (key, window index), the same functions.

No engine: the floor for the window benchmarks. `benchlib.plain_windows`
reads the same `benchlib.KeyedItems` (kind ``timed``), calls the same
dt_getter (`benchlib.event_time`) and reducer (`benchlib.add_timed`), and
finds the window index by integer arithmetic on the time
(``(t - align) // length`` with timedeltas); for ``--window sliding``
(60 s every 10 s) it adds each item to its 6 windows. It emits every window
at the end (no watermark, no timers).
"""

from __future__ import annotations

from datetime import timedelta

import benchlib
from benchlib import KeyedItems


def main() -> None:
    p = benchlib.parser(__doc__ or "", items=1_000_000)
    p.add_argument("--window", choices=["tumbling", "sliding"], default="tumbling")
    args = p.parse_args()
    if args.window == "tumbling":
        length = offset = timedelta(seconds=10)
    else:
        length, offset = timedelta(seconds=60), timedelta(seconds=10)

    def once(items: int) -> int:
        return len(benchlib.plain_windows(KeyedItems(items, "timed"), length, offset))

    once(min(args.items, 10_000))  # warm-up
    times, outputs = benchlib.time_runs(lambda: once(args.items), args.repeat)
    result = benchlib.rate_result(
        "windows", "plain", args.items, times, outputs, outputs[0], window=args.window
    )
    benchlib.emit(result)


if __name__ == "__main__":
    main()
