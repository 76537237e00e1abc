"""Recovery: the time of one commit against the rows the store holds.

Store level (`aiowax._recovery.store.Store`, no flow): K live keys are
committed once, then 30 commits change 10 keys each (``keep_from`` = epoch
- 1, as a run without ``backup_interval`` does); the median of those is
reported, for K of 1,000 to 300,000. Then, with ``--all-keys``, commits that
change every key of 20,000 and 90,000 (the case where looking at every row
is the cheaper garbage collection). Run with ``PYTHONPATH`` on the ``src/``
to measure. Private API: may move.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from aiowax._recovery.store import Store, init_db_dir

BLOB = b"x" * 40


def few_changes(keys: int) -> float:
    """Median seconds of a commit of 10 changed keys among ``keys``."""
    path = Path(tempfile.mkdtemp(prefix="aiowax_commit_"))
    try:
        init_db_dir(path, 2)
        store = Store(path)
        store.commit(1, {("step", f"k{i}"): BLOB for i in range(keys)}, 1, None)
        times = []
        for epoch in range(2, 32):
            changes = {("step", f"k{(epoch * 10 + j) % keys}"): BLOB for j in range(10)}
            started = time.perf_counter()
            store.commit(epoch, changes, 1, epoch - 1)
            times.append(time.perf_counter() - started)
        store.close()
    finally:
        shutil.rmtree(path)
    return sorted(times)[len(times) // 2]


def all_changed(keys: int, commits: int = 7) -> list[float]:
    """Seconds of each of ``commits`` commits that change every one of ``keys``."""
    path = Path(tempfile.mkdtemp(prefix="aiowax_commit_"))
    try:
        init_db_dir(path, 2)
        store = Store(path)
        times = []
        for epoch in range(1, commits + 1):
            changes = {("step", f"k{i}"): BLOB for i in range(keys)}
            started = time.perf_counter()
            store.commit(epoch, changes, 1, epoch - 1 if epoch > 1 else None)
            times.append(time.perf_counter() - started)
        store.close()
    finally:
        shutil.rmtree(path)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--all-keys", action="store_true", help="also commits of every key")
    args = parser.parse_args()
    for keys in (1_000, 10_000, 100_000, 300_000):
        median_ms = few_changes(keys) * 1e3
        print(f"rows={keys:>7}  commit of 10 changed keys: median {median_ms:6.1f} ms")
    if args.all_keys:
        for keys in (20_000, 90_000):
            shown = " ".join(f"{t * 1e3:.0f}" for t in all_changed(keys))
            print(f"keys={keys:>6}  commits changing every key: {shown} ms")


if __name__ == "__main__":
    main()
