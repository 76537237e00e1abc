"""What the curve and latency-under-load scripts share (standard library only).

Imported by ``bench_curve.py`` (aiowax), ``bytewax_curve.py`` (Bytewax
0.17.2), ``bytewax021_curve.py`` (Bytewax 0.21.1) and ``plain_curve.py``,
and by the ``*_latency_load.py`` scripts, so it must not import aiowax or
bytewax. Each curve script measures ONE point of one curve (a family, an
operator and an x value) in a fresh process and prints one JSON object.

The families (``--family``), what ``--x`` is, and the operators:

- ``keys``: the number of keys; ``stateful_map`` (`benchlib.zero`,
  `benchlib.running_sum`) or ``fold_window`` (a `TumblingWindow` of 10 s
  folding with `fold_zero` / `fold_add`, event times 1 ms apart).
- ``steps``: the number of ``map(add_one)`` steps in a row.
- ``windows``: windows per item: ``SlidingWindow(length = x s, offset =
  1 s)`` reducing with `benchlib.add_timed`, 100 keys, event times 1 ms apart.
- ``workers``: workers in one process (``cluster_main(flow, [], 0,
  worker_count_per_proc=x)``); ``map_filter`` (`benchlib.add_one` then
  `benchlib.is_even`) or ``stateful_map`` over 100 keys.
- ``async``: the latency (ms) of the mapper; aiowax awaits
  ``asyncio.sleep`` at ``max_concurrency=100``, Bytewax calls
  ``time.sleep`` (it cannot await), and Bytewax 0.21.1 also runs the
  sleeps in a 100-thread pool from ``flat_map_batch``.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import benchlib
from benchlib import ALIGN, TICK, PeakRss

FAMILIES = ("keys", "steps", "windows", "workers", "async")
OPS = {
    "keys": ("stateful_map", "fold_window"),
    "steps": ("map",),
    "windows": ("sliding",),
    "workers": ("map_filter", "stateful_map"),
    "async": ("map",),
}
#: Length of the tumbling windows of the ``keys`` family.
TUMBLE = timedelta(seconds=10)
#: Offset of the sliding windows of the ``windows`` family (length = x offsets).
SLIDE = timedelta(seconds=1)
#: The async family's fixed concurrency.
CONCURRENCY = 100
#: Source batch size of every curve.
BATCH = 1000


class CurveItems:
    """``(key, value)`` items with their key strings made up front.

    Item ``i`` has key ``k{i % keys}`` and value ``i`` (``kind="int"``) or
    ``(ALIGN + i ms, i)`` (``kind="timed"``). Unlike `benchlib.KeyedItems`,
    the key names are built when this object is, before the measurement,
    so that with 1M keys the 1M strings belong to the baseline, not to the
    engine's peak (the engine's state holds references to them).
    Re-iterable.
    """

    def __init__(self, items: int, keys: int, kind: str = "int") -> None:
        self.items, self.keys, self.kind = items, keys, kind
        self.names = benchlib.key_names(keys)

    def __len__(self) -> int:
        return self.items

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        names, count, n = self.names, self.keys, self.items
        if self.kind == "int":
            return ((names[i % count], i) for i in range(n))
        align, tick = ALIGN, TICK
        return ((names[i % count], (align + i * tick, i)) for i in range(n))


def fold_zero() -> int:
    """The ``fold_window`` builder: an empty sum."""
    return 0


def fold_add(acc: int, value: tuple[Any, int]) -> int:
    """The ``fold_window`` folder: adds the number of a timed value."""
    return acc + value[1]


def fold_merge(a: int, b: int) -> int:
    """Bytewax 0.21.1's ``fold_window`` merger (only session windows merge)."""
    return a + b


def sleep_mapper(latency_s: float) -> Callable[[Any], Any]:
    """A sync mapper that blocks ``latency_s`` (what Bytewax can do)."""

    def mapper(x: Any) -> Any:
        time.sleep(latency_s)
        return x

    return mapper


def window_count(items: int, keys: int, length: timedelta, offset: timedelta) -> int:
    """How many ``(key, window)`` pairs the items fall into (windows emitted).

    Item ``i`` (key ``i % keys``, time ``i`` ms after `ALIGN`) is in windows
    ``(t - length) // offset + 1 .. t // offset``; a key's times increase,
    so the union of its items' windows is counted by walking them in order.
    """
    tick = TICK // timedelta(microseconds=1)
    length_us, offset_us = length // timedelta(microseconds=1), offset // timedelta(microseconds=1)
    last = [-math.inf] * keys
    total = 0
    for i in range(items):
        t = i * tick
        lo, hi = (t - length_us) // offset_us + 1, t // offset_us
        k = i % keys
        start = max(lo, last[k] + 1)
        if hi >= start:
            total += int(hi - start + 1)
            last[k] = hi
    return total


def expected_outputs(family: str, op: str, x: int, items: int, keys: int) -> int:
    """What the sink should count for one point."""
    if family == "keys" and op == "fold_window":
        return window_count(items, x, TUMBLE, TUMBLE)
    if family == "windows":
        return window_count(items, keys, SLIDE * x, SLIDE)
    if family == "workers" and op == "map_filter":
        return benchlib.expected_kept(items)
    return items


def keys_of(args: argparse.Namespace) -> int:
    """The number of keys of a point: ``--x`` for the keys family, else ``--keys``."""
    return args.x if args.family == "keys" else args.keys


def point_parser(
    description: str, ops: dict[str, tuple[str, ...]] = OPS
) -> argparse.ArgumentParser:
    """The options every curve script takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--family", choices=FAMILIES, required=True)
    p.add_argument("--op", required=True, help=f"operator: {ops}")
    p.add_argument("--x", type=int, required=True, help="the x value of the point")
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--keys", type=int, default=benchlib.KEY_COUNT, help="keys, when not x")
    p.add_argument("--repeat", type=int, default=2, help="timed runs (best kept)")
    p.add_argument("--warmup-items", type=int, default=2_000)
    p.add_argument(
        "--long-run-s", type=float, default=5.0, help="no more runs after a first this long"
    )
    p.add_argument("--variant", default="", help="contestant variant (e.g. threads)")
    return p


def measure_point(
    run_once: Callable[[int], int], args: argparse.Namespace, contestant: str, **extra: Any
) -> dict[str, Any]:
    """Warm up, then time ``run_once(items)`` ``repeat`` times; memory of the first.

    A first run longer than ``--long-run-s`` is the only one.

    ``run_once`` builds the flow and runs it, returning what the sink
    counted. Memory is peak RSS above the RSS right before the first timed
    run (`benchlib.PeakRss`), after a small warm-up run. Items/s is the best
    of the runs.
    """
    if args.warmup_items:
        run_once(min(args.items, args.warmup_items))
    times: list[float] = []
    outputs: list[int] = []
    mem: dict[str, Any] = {}
    for i in range(args.repeat):
        if times and times[0] > args.long_run_s:
            break  # a slow point: one run says enough about its shape
        gc.collect()
        if i == 0:
            with PeakRss() as peak:
                start = time.perf_counter()
                outputs.append(run_once(args.items))
                times.append(time.perf_counter() - start)
            mem = peak.as_dict()
        else:
            start = time.perf_counter()
            outputs.append(run_once(args.items))
            times.append(time.perf_counter() - start)
    expected = expected_outputs(args.family, args.op, args.x, args.items, keys_of(args))
    best = min(times)
    return {
        "bench": "curve",
        "family": args.family,
        "op": args.op,
        "x": args.x,
        "contestant": contestant,
        "variant": args.variant,
        "items": args.items,
        "keys": keys_of(args),
        "times_s": times,
        "best_s": best,
        "items_per_s": args.items / best,
        "outputs": outputs,
        "expected_outputs": expected,
        "kept_ok": all(o == expected for o in outputs),
        **mem,
        **extra,
    }


# --- latency under load --------------------------------------------------------

#: Maps between the paced source and the probe sink (as in `bench_latency.py`).
LOAD_MAPS = 5


class Pacer:
    """An open-loop arrival schedule: item ``n`` is due ``n / rate`` s after start.

    `due` hands out every item due by now (at most ``cap``), each being its
    due time in ``perf_counter_ns`` units, so the sink's latency of an item
    is measured from when it was due, not from when the source got round to
    it: a source that falls behind shows up as latency (no coordinated
    omission). ``rate`` 0 means saturation: ``cap`` items on every call.
    """

    def __init__(self, rate: float, duration_s: float, cap: int) -> None:
        self.rate, self.cap = rate, cap
        self.total = int(rate * duration_s) if rate else 0
        self.duration_ns = int(duration_s * 1e9)
        self.sent = 0
        self.start_ns = 0
        self.batches = 0

    def begin(self) -> None:
        self.start_ns = time.perf_counter_ns()

    def done(self) -> bool:
        if self.rate:
            return self.sent >= self.total
        return time.perf_counter_ns() - self.start_ns >= self.duration_ns

    def due(self) -> list[int]:
        """The items due now (possibly none)."""
        now = time.perf_counter_ns()
        if not self.start_ns:
            self.start_ns = now
        sent = self.sent
        if not self.rate:
            n = self.cap
            self.sent = sent + n
            self.batches += 1
            return [now] * n
        upto = min(self.total, int((now - self.start_ns) * self.rate / 1e9) + 1)
        n = min(upto - sent, self.cap)
        if n <= 0:
            return []
        self.sent = sent + n
        self.batches += 1
        start, step = self.start_ns, 1e9 / self.rate
        return [start + int(k * step) for k in range(sent, sent + n)]

    def next_due_ns(self) -> int:
        """When the next item is due (``perf_counter_ns`` units)."""
        if not self.rate:
            return time.perf_counter_ns()
        return self.start_ns + int(self.sent * 1e9 / self.rate)


class LoadProbe:
    """The sink end: latency of every item, from its due time to the sink.

    The items arrive ``maps`` times `benchlib.add_one`-ed: the due time is
    the value less ``maps``.
    """

    def __init__(self, maps: int = LOAD_MAPS) -> None:
        self.maps = maps
        self.latencies_ns: list[int] = []
        self.first_ns = 0
        self.last_ns = 0
        self.count = 0

    def received(self, values: list[int]) -> None:
        now = time.perf_counter_ns()
        if not self.first_ns:
            self.first_ns = now
        self.last_ns = now
        self.count += len(values)
        base = now + self.maps
        self.latencies_ns.extend([base - v for v in values])


def load_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--rate", type=float, default=0.0, help="items/s offered (0: saturate)")
    p.add_argument("--duration-s", type=float, default=2.0, help="how long the source runs")
    p.add_argument("--warmup-s", type=float, default=0.5, help="first seconds not counted")
    p.add_argument("--cap", type=int, default=1000, help="most items per source batch")
    p.add_argument("--maps", type=int, default=LOAD_MAPS, help="map(add_one) steps")
    p.add_argument("--wake", choices=("spin", "awake"), default="spin")
    return p


def load_result(
    contestant: str, args: argparse.Namespace, pacer: Pacer, probe: LoadProbe, cpu_s: float
) -> dict[str, Any]:
    """The JSON record of one latency-under-load run."""
    wall_s = (probe.last_ns - pacer.start_ns) / 1e9 if probe.last_ns else math.nan
    skip = int(len(probe.latencies_ns) * min(1.0, args.warmup_s / max(args.duration_s, 1e-9)))
    lat = probe.latencies_ns[skip:]
    out: dict[str, Any] = {
        "bench": "latency_load",
        "contestant": contestant,
        "offered_per_s": args.rate,
        "duration_s": args.duration_s,
        "sent": pacer.sent,
        "received": probe.count,
        "received_ok": probe.count == pacer.sent,
        "achieved_per_s": probe.count / wall_s if wall_s else math.nan,
        "wall_s": wall_s,
        "source_batches": pacer.batches,
        "mean_batch": pacer.sent / pacer.batches if pacer.batches else 0,
        "cpu_per_wall": cpu_s / wall_s if wall_s else math.nan,
        "maps": args.maps,
        "wake": args.wake,
        "cap": args.cap,
        "loadavg_after": os.getloadavg()[0],
    }
    if args.rate:
        out |= benchlib.latency_summary(lat)
    return out
