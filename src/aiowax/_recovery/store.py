"""SQLite partition files: where snapshots live between runs.

A recovery directory holds ``part-<i>.sqlite3`` for ``i`` in ``0..count-1``.
Each file keeps the snapshot rows of the state keys hashed to it, and a row
per committed epoch. An epoch is committed file by file after all its rows
are written; a crash in the middle leaves some files one commit behind, so
a resume starts from the newest epoch that every file has committed.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from zlib import crc32

from aiowax._checks import positive_int
from aiowax._errors import (
    InconsistentPartitionsError,
    MissingPartitionsError,
    NoPartitionsError,
)

_NAME = re.compile(r"^part-(\d+)\.sqlite3$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (part_index INTEGER NOT NULL, part_count INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS snaps (
    step_id TEXT NOT NULL,
    state_key BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    ser BLOB,
    PRIMARY KEY (step_id, state_key, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commits (
    epoch INTEGER PRIMARY KEY,
    worker_count INTEGER NOT NULL,
    committed_at TEXT NOT NULL
);
"""


def partition_path(db_dir: Path, index: int) -> Path:
    """The file of partition ``index``."""
    return db_dir / f"part-{index}.sqlite3"


def _connect(path: Path) -> sqlite3.Connection:
    # One writer task uses a connection at a time, from worker threads.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def init_db_dir(db_dir: str | Path, count: int) -> None:
    """Create ``count`` empty partition files in ``db_dir``.

    Args:
        db_dir: The directory; created if missing.
        count: How many partition files; at least 1. More files spread the
            writes of one epoch over more transactions.

    Raises:
        TypeError: ``count`` is not an int.
        ValueError: ``count`` is not positive, or ``db_dir`` already holds
            partition files.
    """
    positive_int("init_db_dir", "count", count)
    path = Path(db_dir)
    path.mkdir(parents=True, exist_ok=True)
    existing = sorted(p.name for p in path.iterdir() if _NAME.match(p.name))
    if existing:
        msg = f"init_db_dir: {path} already holds partition files ({', '.join(existing)})"
        raise ValueError(msg)
    for index in range(count):
        conn = _connect(partition_path(path, index))
        try:
            conn.executescript(_SCHEMA)
            conn.execute("INSERT INTO meta VALUES (?, ?)", (index, count))
        finally:
            conn.close()


Changes = Mapping[tuple[str, str], bytes | None]


class Store:
    """The open partition files of one run.

    Attributes:
        count: Number of partition files.
        committed: The newest epoch every file has committed (0: none).
    """

    def __init__(self, db_dir: Path) -> None:
        if not db_dir.is_dir():
            msg = f"recovery directory {db_dir} does not exist; create it with init_db_dir"
            raise NoPartitionsError(msg)
        found = {
            int(m.group(1)): p for p in db_dir.iterdir() if (m := _NAME.match(p.name)) is not None
        }
        if not found:
            msg = (
                f"no partition files in {db_dir}; create them with "
                f"'python -m aiowax.recovery {db_dir} COUNT'"
            )
            raise NoPartitionsError(msg)
        self.conns: dict[int, sqlite3.Connection] = {}
        try:
            self._open(db_dir, found)
        except BaseException:
            self.close()
            raise

    def _open(self, db_dir: Path, found: dict[int, Path]) -> None:
        counts = set()
        for index, path in sorted(found.items()):
            try:
                conn = self.conns[index] = _connect(path)
                rows = conn.execute("SELECT part_index, part_count FROM meta").fetchall()
            except sqlite3.DatabaseError as error:
                msg = f"{path} is not an aiowax partition file: {error}"
                raise InconsistentPartitionsError(msg) from None
            if len(rows) != 1 or rows[0][0] != index:
                msg = f"{path} does not describe partition {index}: {rows!r}"
                raise InconsistentPartitionsError(msg)
            counts.add(rows[0][1])
        if len(counts) != 1:
            msg = f"the partition files in {db_dir} disagree on their count: {sorted(counts)}"
            raise InconsistentPartitionsError(msg)
        self.count: int = counts.pop()
        missing = sorted(set(range(self.count)) - set(found))
        extra = sorted(set(found) - set(range(self.count)))
        if missing:
            names = ", ".join(partition_path(db_dir, i).name for i in missing)
            msg = f"{db_dir} lacks partition files {names} (of {self.count})"
            raise MissingPartitionsError(msg)
        if extra:
            msg = f"{db_dir} has partition files beyond its count {self.count}: {extra}"
            raise InconsistentPartitionsError(msg)
        tops = {
            i: conn.execute("SELECT COALESCE(MAX(epoch), 0) FROM commits").fetchone()[0]
            for i, conn in self.conns.items()
        }
        low = min(tops.values())
        if not self._one_commit_apart(tops, low):
            # A crash during a commit leaves files at most one commit apart.
            msg = (
                f"the partition files in {db_dir} come from different points in time "
                f"(last committed epochs {tops}); was one restored from an older backup?"
            )
            raise InconsistentPartitionsError(msg)
        self.committed = low

    def _one_commit_apart(self, tops: dict[int, int], low: int) -> bool:
        """Whether the files ahead of ``low`` are exactly one commit ahead.

        Commits merge epochs, so two consecutive commits may be many epochs
        apart: compare commits, not epoch numbers. A file ahead has one
        commit after ``low`` and still the row of ``low`` itself (garbage
        collection keeps the newest commit before the one it runs in).
        """
        if len(set(tops.values())) > 2:
            return False
        for index, top in tops.items():
            if top == low:
                continue
            conn = self.conns[index]
            after = conn.execute("SELECT COUNT(*) FROM commits WHERE epoch > ?", (low,))
            if after.fetchone()[0] != 1:
                return False
            has_low = conn.execute("SELECT 1 FROM commits WHERE epoch = ?", (low,))
            if low and has_low.fetchone() is None:
                return False
        return True

    def part_of(self, step_id: str, state_key: str) -> int:
        """The partition file of one state key of one step."""
        return crc32(f"{step_id}\x1f{state_key}".encode("utf-8", "surrogatepass")) % self.count

    def load(self) -> dict[tuple[str, str], bytes]:
        """Every live snapshot as of the committed epoch, by (step, key)."""
        out: dict[tuple[str, str], bytes] = {}
        query = """
            SELECT s.step_id, s.state_key, s.ser FROM snaps s
            JOIN (SELECT step_id, state_key, MAX(epoch) AS epoch FROM snaps
                  WHERE epoch <= ? GROUP BY step_id, state_key) latest
            USING (step_id, state_key, epoch)
            WHERE s.ser IS NOT NULL
        """
        for conn in self.conns.values():
            for step_id, state_key, ser in conn.execute(query, (self.committed,)):
                out[(step_id, _key_text(state_key))] = ser
        return out

    def discard_uncommitted(self) -> None:
        """Drop rows of epochs past the committed one (a crashed run's)."""
        for conn in self.conns.values():
            conn.execute("BEGIN")
            conn.execute("DELETE FROM snaps WHERE epoch > ?", (self.committed,))
            conn.execute("DELETE FROM commits WHERE epoch > ?", (self.committed,))
            conn.execute("COMMIT")

    def commit(
        self, epoch: int, changes: Changes, worker_count: int, keep_from: int | None
    ) -> None:
        """Write one epoch's changes, then mark it committed, file by file.

        Args:
            epoch: The epoch being committed.
            changes: New snapshot bytes (``None``: the state was deleted).
            worker_count: Recorded with the commit, for diagnostics.
            keep_from: Superseded rows older than this epoch are deleted;
                it must be below ``epoch``, so that a resume from the epoch
                before this one (after a crash mid-commit) finds its rows.
        """
        by_part: dict[int, list[tuple[str, bytes, int, bytes | None]]] = {}
        for (step_id, key), ser in changes.items():
            row = (step_id, _key_blob(key), epoch, ser)
            by_part.setdefault(self.part_of(step_id, key), []).append(row)
        stamp = datetime.now(UTC).isoformat()
        for index, conn in self.conns.items():
            conn.execute("BEGIN")
            try:
                rows = by_part.get(index)
                if rows:
                    conn.executemany("INSERT OR REPLACE INTO snaps VALUES (?, ?, ?, ?)", rows)
                conn.execute(
                    "INSERT OR REPLACE INTO commits VALUES (?, ?, ?)", (epoch, worker_count, stamp)
                )
                if keep_from is not None:
                    _collect_garbage(conn, keep_from)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self.committed = epoch

    def close(self) -> None:
        """Close every file."""
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()


def _key_blob(key: str) -> bytes:
    # Keys are any str, lone surrogates included, which SQLite text refuses.
    return key.encode("utf-8", "surrogatepass")


def _key_text(blob: bytes) -> str:
    return blob.decode("utf-8", "surrogatepass")


def _collect_garbage(conn: sqlite3.Connection, keep_from: int) -> None:
    # Keep, per key, the newest row before ``keep_from`` (what a resume from
    # that epoch needs) and everything after it; drop older rows, and drop
    # deletions once nothing older than them is left to hide.
    conn.execute(
        """
        DELETE FROM snaps WHERE epoch < (
            SELECT MAX(epoch) FROM snaps AS newer
            WHERE newer.step_id = snaps.step_id AND newer.state_key = snaps.state_key
              AND newer.epoch <= ?
        )
        """,
        (keep_from,),
    )
    conn.execute("DELETE FROM snaps WHERE ser IS NULL AND epoch <= ?", (keep_from,))
    conn.execute(
        "DELETE FROM commits WHERE epoch < (SELECT MAX(epoch) FROM commits WHERE epoch <= ?)",
        (keep_from,),
    )
