"""Helpers shared by every benchmark script (standard library only).

The benchmark scripts run in different interpreters (the aiowax venv, the
Bytewax 0.17.2 venv and the Bytewax 0.21.1 venv), so this module must not
import aiowax or bytewax. Each
script prints exactly one JSON object as the last line of its stdout; the
harness (`run.py`) collects it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import random
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

# --- the workload: the SAME two module-level functions for every contestant --


def add_one(x: int) -> int:
    """The mapper of every benchmark: ``x + 1``."""
    return x + 1


def is_even(x: int) -> bool:
    """The predicate of the throughput benchmarks: keeps half of the items."""
    return x % 2 == 0


def expected_kept(n: int) -> int:
    """How many of ``add_one(x) for x in range(n)`` pass `is_even`."""
    return n // 2


# --- keyed and window workloads: the SAME functions for every contestant ----

#: How many keys the keyed and window benchmarks spread their items over.
KEY_COUNT = 100
#: `count_reached` completes a `reduce` accumulator after this many values.
REDUCE_EVERY = 10
#: Where the event-time axis of the window benchmarks starts (and windows align).
ALIGN = datetime(2024, 1, 1, tzinfo=UTC)
#: Event time between consecutive items of the window benchmarks.
TICK = timedelta(milliseconds=1)


def key_names(count: int = KEY_COUNT) -> list[str]:
    """The keys, ``k0`` .. ``k{count-1}``."""
    return [f"k{i}" for i in range(count)]


class KeyedItems:
    """The input of the keyed and window benchmarks: ``(key, value)`` items.

    Item ``i`` has key ``k{i % keys}`` (round robin, so each 1000-item batch
    holds 10 items per key with 100 keys) and, by ``kind``:

    - ``"int"``: value ``i`` (`stateful_map`, `batch`);
    - ``"pair"``: value ``(1, i)``, a (count, sum) pair for `reduce`;
    - ``"timed"``: value ``(ALIGN + i * TICK, i)`` for the window operators;
    - ``"unique"``: like ``"timed"`` but key ``u{i}``: every key is new.

    Re-iterable (each ``iter()`` starts over), so a source can rebuild it.
    """

    KINDS = ("int", "pair", "timed", "unique")

    def __init__(self, items: int, kind: str = "int", keys: int = KEY_COUNT) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"kind must be one of {self.KINDS}, got {kind!r}")
        self.items, self.kind, self.keys = items, kind, keys

    def __len__(self) -> int:
        return self.items

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        names, count, n = key_names(self.keys), self.keys, self.items
        if self.kind == "int":
            return ((names[i % count], i) for i in range(n))
        if self.kind == "pair":
            return ((names[i % count], (1, i)) for i in range(n))
        align, tick = ALIGN, TICK
        if self.kind == "timed":
            return ((names[i % count], (align + i * tick, i)) for i in range(n))
        return ((f"u{i}", (align + i * tick, i)) for i in range(n))


class PacedItems:
    """An open-loop pace over a finite input: item ``n`` is due ``n / rate`` s after `begin`.

    `due` hands out the items due by now, at most ``cap`` (``[]`` when none
    is due), in the input's own order and unchanged: only the pacing differs
    from reading the input as fast as the engine takes it. `next_awake` is the
    next item's due time (``None`` when it is already due or the input is
    done: call again at once), so the engine sleeps rather than spins.
    ``sent`` is how many items were handed out (read from a thread by
    `OpenSampler`). Standard library only, like the rest of this module.
    """

    def __init__(self, items: Iterable[Any], total: int, rate: float, cap: int) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0, got {rate!r}")
        self.items, self.total, self.rate, self.cap = items, total, rate, cap
        self.sent = 0
        self.start_ns = self.last_ns = self.max_lag_ns = 0
        self._it: Iterator[Any] = iter(())

    def begin(self) -> None:
        """Start the schedule (item 0 is due now) and the input from its start."""
        self.start_ns = time.perf_counter_ns()
        self._it = iter(self.items)
        self.sent = self.last_ns = self.max_lag_ns = 0

    def done(self) -> bool:
        return self.sent >= self.total

    def due(self) -> list[Any]:
        """The items due now (possibly none), at most ``cap``."""
        if not self.start_ns:
            self.begin()
        elapsed_ns = time.perf_counter_ns() - self.start_ns
        upto = min(self.total, int(elapsed_ns * self.rate / 1e9) + 1)
        n = min(upto - self.sent, self.cap)
        if n <= 0:
            return []
        # how late the oldest item of this batch is handed out
        self.max_lag_ns = max(self.max_lag_ns, elapsed_ns - int(self.sent * 1e9 / self.rate))
        batch = list(itertools.islice(self._it, n))
        self.sent += len(batch)
        self.last_ns = self.start_ns + elapsed_ns
        if len(batch) < n:  # the input ran out early
            self.total = self.sent
        return batch

    def next_awake(self) -> datetime | None:
        """When the next item is due; ``None`` if now (or the input is done)."""
        if self.done():
            return None
        due_ns = self.start_ns + math.ceil(self.sent * 1e9 / self.rate)
        wait_ns = due_ns - time.perf_counter_ns()
        if wait_ns <= 0:
            return None
        return datetime.now(UTC) + timedelta(microseconds=wait_ns / 1000)

    def as_dict(self) -> dict[str, Any]:
        """Offered and achieved rate and lag: did the engine keep up?

        ``achieved_items_per_s``: items handed out after the first over the
        time from the first item's due time to the last hand-out (about
        ``rate`` if the engine kept up). ``source_lag_s``: how late the last
        item was handed out; ``source_max_lag_s``: the most any batch's
        oldest item was.
        """
        span_s = (self.last_ns - self.start_ns) / 1e9
        last_due_s = (self.sent - 1) / self.rate if self.sent else 0.0
        return {
            "offered_items_per_s": self.rate,
            "achieved_items_per_s": (self.sent - 1) / span_s if span_s > 0 else None,
            "handed_out": self.sent,
            "source_lag_s": span_s - last_due_s,
            "source_max_lag_s": self.max_lag_ns / 1e9,
        }


class OpenSampler:
    """The most of ``handed() - emitted()`` at once, sampled every 10 ms from a thread.

    With ``handed`` the items a source handed out and ``emitted`` the
    sessions the sink got (one per item in the sessions benchmark), that is
    the most sessions open at once (in-flight items count as open).
    """

    def __init__(self, handed: Callable[[], int], emitted: Callable[[], int]) -> None:
        self.handed, self.emitted = handed, emitted
        self.peak = 0
        self.samples = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.done.wait(0.01):
            self.peak = max(self.peak, self.handed() - self.emitted())
            self.samples += 1

    def __enter__(self) -> OpenSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()


def zero() -> int:
    """The `stateful_map` builder: a new key's state is 0."""
    return 0


def running_sum(state: int, value: int) -> tuple[int, int]:
    """The `stateful_map` mapper: adds the value, emits the new sum."""
    state += value
    return state, state


def add_pairs(acc: tuple[int, int], value: tuple[int, int]) -> tuple[int, int]:
    """The `reduce` reducer: sums ``(count, total)`` pairs."""
    return acc[0] + value[0], acc[1] + value[1]


def count_reached(acc: tuple[int, int]) -> bool:
    """The `reduce` is_complete: every `REDUCE_EVERY` values of a key."""
    return acc[0] >= REDUCE_EVERY


def event_time(value: tuple[datetime, int]) -> datetime:
    """The windows' dt_getter: the datetime carried in the value."""
    return value[0]


def add_timed(acc: tuple[datetime, int], value: tuple[datetime, int]) -> tuple[datetime, int]:
    """The `reduce_window` reducer: keeps the latest time, sums the numbers."""
    return value[0], acc[1] + value[1]


# --- the plain-Python references of the keyed and window benchmarks ----------


def plain_stateful_map(
    items: Iterable[tuple[str, Any]],
    builder: Callable[[], Any] = zero,
    mapper: Callable[[Any, Any], tuple[Any, Any]] = running_sum,
) -> list[tuple[str, Any]]:
    """A dict of per-key states calling ``mapper``; emits ``(key, out)``."""
    states: dict[str, Any] = {}
    out: list[tuple[str, Any]] = []
    emit = out.append
    for key, value in items:
        state = states[key] if key in states else builder()
        state, result = mapper(state, value)
        if state is None:
            states.pop(key, None)
        else:
            states[key] = state
        emit((key, result))
    return out


def plain_reduce(
    items: Iterable[tuple[str, Any]],
    reducer: Callable[[Any, Any], Any] = add_pairs,
    is_complete: Callable[[Any], bool] = count_reached,
) -> list[tuple[str, Any]]:
    """Per-key accumulators; emits ``(key, acc)`` when ``is_complete``."""
    accs: dict[str, Any] = {}
    out: list[tuple[str, Any]] = []
    for key, value in items:
        acc = reducer(accs[key], value) if key in accs else value
        if is_complete(acc):
            accs.pop(key, None)
            out.append((key, acc))
        else:
            accs[key] = acc
    return out  # incomplete accumulators are dropped, as by the engines


def plain_batch(items: Iterable[tuple[str, Any]], max_size: int) -> list[tuple[str, list[Any]]]:
    """Per-key lists; emits ``(key, list)`` at ``max_size`` and at the end."""
    lists: dict[str, list[Any]] = {}
    out: list[tuple[str, list[Any]]] = []
    for key, value in items:
        batch = lists.get(key)
        if batch is None:
            batch = lists[key] = []
        batch.append(value)
        if len(batch) >= max_size:
            del lists[key]
            out.append((key, batch))
    out.extend(lists.items())
    return out


def plain_windows(
    items: Iterable[tuple[str, Any]],
    length: timedelta,
    offset: timedelta,
    dt_getter: Callable[[Any], datetime] = event_time,
    reducer: Callable[[Any, Any], Any] = add_timed,
    align: datetime = ALIGN,
) -> list[tuple[str, tuple[int, Any]]]:
    """Sliding (or, with ``offset == length``, tumbling) windows in a dict.

    Keyed by ``(key, window index)``; an item at ``t`` belongs to windows
    ``(t - align - length) // offset + 1`` .. ``(t - align) // offset``
    (timedelta floor division gives ints). Emits ``(key, (index, acc))``
    for every window at the end, in window order.
    """
    accs: dict[tuple[str, int], Any] = {}
    if offset == length:
        for key, value in items:
            slot = (key, (dt_getter(value) - align) // length)
            accs[slot] = reducer(accs[slot], value) if slot in accs else value
    else:
        for key, value in items:
            d = dt_getter(value) - align
            for index in range((d - length) // offset + 1, d // offset + 1):
                slot = (key, index)
                accs[slot] = reducer(accs[slot], value) if slot in accs else value
    return [(key, (index, acc)) for (key, index), acc in sorted(accs.items())]


def by_key(items: Iterable[tuple[str, Any]], unwrap: Callable[[Any], Any] | None = None) -> dict:
    """``{key: [values in arrival order]}``, each value passed through ``unwrap``."""
    out: dict[str, list[Any]] = {}
    for key, value in items:
        out.setdefault(key, []).append(unwrap(value) if unwrap else value)
    return out


def window_accs(items: Iterable[tuple[str, Any]]) -> dict[str, list[Any]]:
    """``{key: sorted accumulators}`` of window output of any shape.

    aiowax emits ``(key, (WindowMetadata, acc))``, Bytewax 0.17.2 ``(key,
    acc)``, Bytewax 0.21.1 ``(key, (window_id, acc))`` (its ``WindowOut.down``
    stream), the plain loop ``(key, (index, acc))``; the accumulators here are
    ``(datetime, int)`` pairs, so a value whose first element is not a
    datetime is unwrapped once.
    """
    out = by_key(items, lambda v: v if isinstance(v[0], datetime) else v[1])
    return {key: sorted(accs) for key, accs in out.items()}


# --- timing -----------------------------------------------------------------


def time_runs(fn: Callable[[], Any], repeat: int) -> tuple[list[float], list[Any]]:
    """Call ``fn`` ``repeat`` times; return the wall times (s) and the results."""
    times: list[float] = []
    results: list[Any] = []
    for _ in range(repeat):
        start = time.perf_counter()
        results.append(fn())
        times.append(time.perf_counter() - start)
    return times, results


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted sequence."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies_ns: Sequence[int]) -> dict[str, float]:
    """p50/p90/p99/max/mean of latencies given in ns, returned in µs."""
    values = sorted(v / 1000 for v in latencies_ns)
    return {
        "count": len(values),
        "p50_us": percentile(values, 50),
        "p90_us": percentile(values, 90),
        "p99_us": percentile(values, 99),
        "max_us": values[-1] if values else math.nan,
        "mean_us": sum(values) / len(values) if values else math.nan,
    }


def latency_options(p: argparse.ArgumentParser) -> None:
    """Add the options both latency scripts take."""
    p.add_argument("--warmup", type=int, default=100, help="items sent first, not counted")
    p.add_argument("--gap-ms", type=float, default=1.0, help="idle time between items")
    p.add_argument(
        "--jitter-ms",
        type=float,
        default=1.0,
        help="plus a random 0..J ms per gap, so that sends do not phase-lock with "
        "a periodic poll (Bytewax polls its sources about once per ms)",
    )


def idle_gaps(count: int, gap_ms: float, jitter_ms: float, seed: int = 0) -> list[float]:
    """The idle time (s) after each of ``count`` sends: gap + uniform jitter."""
    rng = random.Random(seed)
    return [(gap_ms + rng.uniform(0, jitter_ms)) / 1000 for _ in range(count)]


#: One latency round: the latencies (ns) and CPU seconds per wall second.
Round = tuple[list[int], float]


def pooled_latency(rounds: Sequence[Round]) -> dict[str, Any]:
    """Percentiles over every round's latencies, plus each round's p50."""
    pooled = [v for lat, _ in rounds for v in lat]
    out: dict[str, Any] = latency_summary(pooled)
    out["rounds"] = len(rounds)
    out["rounds_p50_us"] = [latency_summary(lat)["p50_us"] for lat, _ in rounds]
    out["cpu_per_wall"] = sum(cpu for _, cpu in rounds) / len(rounds)
    return out


# --- memory -----------------------------------------------------------------


def proc_status_kb(field: str) -> int | None:
    """Read a ``kB`` field such as ``VmRSS`` or ``VmHWM`` of /proc/self/status."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process (Linux)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def max_rss_kb() -> int:
    """Lifetime peak RSS from getrusage, in kB (Linux reports kB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak


class PeakRss:
    """Measure peak RSS of a block above the RSS right before it.

    Baseline: VmRSS after the interpreter, the imports and the flow
    definition. Peak: VmHWM after the block, the kernel's high-water mark,
    reset right before the block (so a higher peak from earlier in the process
    does not count); where the reset is impossible, ``ru_maxrss``.
    """

    def __enter__(self) -> PeakRss:
        import gc

        gc.collect()
        self.baseline_kb = proc_status_kb("VmRSS") or 0
        self.hwm_reset = reset_peak_rss()
        self.hwm_before_kb = proc_status_kb("VmHWM") or 0
        return self

    def __exit__(self, *exc: object) -> None:
        self.ru_maxrss_kb = max_rss_kb()
        hwm = proc_status_kb("VmHWM")
        self.peak_kb = hwm if (self.hwm_reset and hwm) else self.ru_maxrss_kb
        self.rss_after_kb = proc_status_kb("VmRSS") or 0

    def as_dict(self) -> dict[str, Any]:
        mb = 1024.0
        return {
            "baseline_rss_mb": self.baseline_kb / mb,
            "peak_rss_mb": self.peak_kb / mb,
            "peak_minus_baseline_mb": (self.peak_kb - self.baseline_kb) / mb,
            "rss_after_mb": self.rss_after_kb / mb,
            "ru_maxrss_mb": self.ru_maxrss_kb / mb,
            "peak_source": "VmHWM (reset before run)" if self.hwm_reset else "ru_maxrss",
        }


# --- command line and output ------------------------------------------------


def parser(description: str, items: int, repeat: int = 3) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark script takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--items", type=int, default=items, help=f"items (default {items:,})")
    p.add_argument("--repeat", type=int, default=repeat, help="runs; best is reported")
    return p


def environment() -> dict[str, Any]:
    """Interpreter facts to store next to the figures."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "pid": os.getpid(),
    }


def package_version(name: str) -> str | None:
    """Installed version of a distribution, or ``None``."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def emit(result: dict[str, Any]) -> None:
    """Print the result as the last line of stdout: one JSON object."""
    result.setdefault("env", environment())
    sys.stdout.flush()
    print(json.dumps(result, sort_keys=True), flush=True)


def throughput_result(
    contestant: str, items: int, batch_size: int | None, times: list[float], kept: list[int]
) -> dict[str, Any]:
    """The JSON record of a throughput run: best-of-N items/s plus every run."""
    best = min(times)
    return {
        "bench": "throughput",
        "contestant": contestant,
        "items": items,
        "batch_size": batch_size,
        "times_s": times,
        "best_s": best,
        "items_per_s": items / best,
        "median_items_per_s": items / sorted(times)[len(times) // 2],
        "kept": kept,
        "kept_ok": all(k == expected_kept(items) for k in kept),
    }


class SinkStats:
    """What a slow sink of the memory benchmark saw."""

    def __init__(self) -> None:
        self.written = 0
        self.calls = 0
        self.max_batch = 0

    def add(self, size: int) -> None:
        self.written += size
        self.calls += 1
        self.max_batch = max(self.max_batch, size)

    def as_dict(self, expected: int) -> dict[str, Any]:
        return {
            "written": self.written,
            "written_ok": self.written == expected,
            "write_batch_calls": self.calls,
            "max_write_batch": self.max_batch,
        }


def rate_result(
    bench: str,
    contestant: str,
    items: int,
    times: list[float],
    outputs: list[int],
    expected: int | None,
    **extra: Any,
) -> dict[str, Any]:
    """The JSON record of a keyed/window/embedding run: best-of-N items/s.

    ``outputs`` is what the sink counted in each run; ``expected`` what the
    plain reference emits for the same input (``None``: not checked).
    """
    best = min(times)
    return {
        "bench": bench,
        "contestant": contestant,
        "items": items,
        "times_s": times,
        "best_s": best,
        "items_per_s": items / best,
        "median_items_per_s": items / sorted(times)[len(times) // 2],
        "outputs": outputs,
        "expected_outputs": expected,
        "kept_ok": expected is None or all(o == expected for o in outputs),
        **extra,
    }


def expected_outputs(op: str, items: int, keys: int = KEY_COUNT, max_size: int = 100) -> int:
    """How many items the plain reference emits for ``op`` over ``items`` items."""
    data = KeyedItems(items, "pair" if op == "reduce" else "int", keys)
    if op == "stateful_map":
        return items
    if op == "reduce":
        return len(plain_reduce(data))
    if op == "batch":
        return len(plain_batch(data, max_size))
    raise ValueError(f"unknown op {op!r}")
