"""SQLite partition files: where snapshots live between runs.

A recovery directory holds ``part-<i>.sqlite3`` for ``i`` in ``0..count-1``,
and ``aiowax.lock``, which a run holds while it uses them (see
`aiowax._recovery.lock`). Each file keeps the snapshot rows of the state
keys hashed to it, and a row per committed epoch. An epoch is committed file
by file, in index order, after all its rows are written; a crash in the
middle leaves the first files one commit ahead of the others, so a resume
starts from the newest epoch that every file has committed. Once every file
has it, file 0 records the epoch as complete: a file that lacks a complete
epoch was lost (and re-created) or restored from an older backup. Then the
store resumes from the newest commit every file still holds (files backed
up one by one, within ``backup_interval``), saying so, or refuses to open
if there is none, rather than silently resume from nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import stat
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn
from zlib import crc32

from aiowax._checks import positive_int
from aiowax._errors import (
    InconsistentPartitionsError,
    MissingPartitionsError,
    NoPartitionsError,
    RecoveryPermissionError,
)
from aiowax._recovery.lock import (
    LOCK_NAME,
    PERMISSION_ERRNOS,
    DirLock,
    lock_dir,
    permission_error,
    uid,
)

logger = logging.getLogger("aiowax.recovery")

_NAME = re.compile(r"^part-(\d+)\.sqlite3$")

#: Keys written since their file's last garbage collection that the store
#: remembers, so that the next one looks at their rows only; past it, the
#: next looks at every row (see `_collect_garbage`).
REMEMBERED_KEYS = 100_000

# The newest epoch every file has committed (one row, in file 0 only); made
# on demand in directories created before it existed.
_COMPLETE_TABLE = "CREATE TABLE IF NOT EXISTS complete (epoch INTEGER NOT NULL);"

# The kind of each step (``stateful_map``, ``batch``...) that wrote snapshots,
# so that a step whose kind changed under the same id is refused (file 0 only;
# made on demand, absent from directories of earlier releases).
_KINDS_TABLE = (
    "CREATE TABLE IF NOT EXISTS step_kinds (step_id TEXT PRIMARY KEY, kind TEXT NOT NULL);"
)

# SQLite's primary result codes that the store tells apart.
_SQLITE_PERM = 3
_SQLITE_READONLY = 8
_SQLITE_CORRUPT = 11
_SQLITE_CANTOPEN = 14
_SQLITE_NOTADB = 26

_SCHEMA = (
    """
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
    + _COMPLETE_TABLE
)


def partition_path(db_dir: Path, index: int) -> Path:
    """The file of partition ``index``."""
    return db_dir / f"part-{index}.sqlite3"


def _connect(path: Path) -> sqlite3.Connection:
    # One writer task uses a connection at a time, from worker threads.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns, even across a power cut
        # or an OS crash (NORMAL may lose the last commits of one file and
        # not of another, and the directory is then refused). One fsync of
        # the log per commit, and commits come once per epoch.
        conn.execute("PRAGMA synchronous=FULL")
    except BaseException:
        # A file that is not a database fails here: close what was opened.
        conn.close()
        raise
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
    """The open partition files of one run, and the lock of their directory.

    Attributes:
        db_dir: The recovery directory.
        count: Number of partition files.
        committed: The newest epoch every file has committed (0: none).
    """

    def __init__(self, db_dir: Path) -> None:
        self.db_dir = db_dir
        try:
            names = os.listdir(db_dir)
        except (FileNotFoundError, NotADirectoryError):
            msg = f"recovery directory {db_dir} does not exist; create it with init_db_dir"
            raise NoPartitionsError(msg) from None
        except OSError as error:
            if error.errno in PERMISSION_ERRNOS:
                raise permission_error(db_dir, error, "list the recovery directory") from None
            raise
        found = {
            int(m.group(1)): db_dir / name for name in names if (m := _NAME.match(name)) is not None
        }
        if not found:
            msg = (
                f"no partition files in {db_dir}; create them with "
                f"'python -m aiowax.recovery {db_dir} COUNT'"
            )
            raise NoPartitionsError(msg)
        _check_access(db_dir, found)
        # Before the lock, which would leave aiowax.lock in a directory that
        # is not aiowax's (a Bytewax one, say).
        for path in sorted(found.values()):
            _check_written_by_aiowax(path)
        self.paths: dict[int, Path] = {}
        self.conns: dict[int, sqlite3.Connection] = {}
        # Per file, for `_collect_garbage`: the keys each epoch wrote since
        # the last collection (the only ones whose older rows the next may
        # delete), from the first epoch remembered on; and the ``keep_from``
        # of the last collection. A collection looks at every row unless
        # every epoch after the last one is remembered (the first of a run;
        # after too many keys to remember).
        self._written: dict[int, dict[int, set[tuple[str, bytes]]]] = {}
        self._remembered_from: dict[int, int] = {}
        self._collected_to: dict[int, int] = {}
        self._remembered = 0
        # Taken before any file is opened, and held until all are closed.
        self._lock: DirLock | None = lock_dir(db_dir)
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
                raise _open_error(path, error) from None
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
        self.paths = {i: partition_path(db_dir, i) for i in range(self.count)}
        tops = {
            i: conn.execute("SELECT COALESCE(MAX(epoch), 0) FROM commits").fetchone()[0]
            for i, conn in sorted(self.conns.items())
        }
        try:
            self._check_tops(db_dir, tops)
            self.committed = min(tops.values())
        except InconsistentPartitionsError as refused:
            self.committed = self._common_commit(db_dir, tops, refused)
        # Rows per file, kept up to date by the commits (see `_keys_to_collect`).
        self._rows = {
            i: conn.execute("SELECT COUNT(*) FROM snaps").fetchone()[0]
            for i, conn in self.conns.items()
        }

    def _check_tops(self, db_dir: Path, tops: dict[int, int]) -> None:
        """Refuse files whose last commits cannot come from one store.

        A crash in the middle of a commit leaves the first files (in index
        order) exactly one commit ahead of the others, and none of them
        behind the complete epoch that file 0 records; anything else means
        a file was lost, re-created or restored from another point in time,
        and resuming would silently restore an older state, or none.
        """
        complete = self._complete_epoch()
        lost = [i for i, top in tops.items() if top < complete]
        if lost:
            msg = (
                f"the partition files in {db_dir} come from different points in time: "
                f"{_names(lost)} never committed epoch {complete}, which every partition "
                f"file had committed (last committed epochs {tops}); was a file lost and "
                "re-created, or restored from an older backup?"
            )
            raise InconsistentPartitionsError(msg)
        low = min(tops.values())
        ahead = [i for i, top in tops.items() if top > low]
        if ahead and max(ahead) >= len(ahead):
            # A file before the last one ahead missed a commit it got first.
            behind = [i for i, top in tops.items() if top == low and i < max(ahead)]
            msg = (
                f"the partition files in {db_dir} come from different points in time: "
                f"{_names(behind)} never committed epoch {max(tops.values())}, which the "
                f"partition files after them committed (last committed epochs {tops}); was a "
                "file lost and re-created, or restored from an older backup?"
            )
            raise InconsistentPartitionsError(msg)
        if not self._one_commit_apart(tops, low):
            msg = (
                f"the partition files in {db_dir} come from different points in time "
                f"(last committed epochs {tops}); was one restored from an older backup?"
            )
            raise InconsistentPartitionsError(msg)
        # One commit writes one time stamp to every file: files that went
        # through the same epoch numbers in different directories differ here.
        stamps = {
            conn.execute("SELECT committed_at FROM commits WHERE epoch = ?", (low,)).fetchone()
            for conn in self.conns.values()
        }
        if low and len(stamps) != 1:
            msg = (
                f"the partition files in {db_dir} come from different points in time: "
                f"their commits of epoch {low} were not the same commit (their time stamps "
                "differ); was one copied from another recovery directory?"
            )
            raise InconsistentPartitionsError(msg)

    def _common_commit(
        self, db_dir: Path, tops: dict[int, int], refused: InconsistentPartitionsError
    ) -> int:
        """The newest commit every file still holds, for files from different moments.

        Files backed up one by one, at different moments (a hot backup,
        each file on its own schedule), are each a few commits apart. Each
        keeps its superseded snapshots for ``backup_interval``, so each can
        still give the state as of any commit still in its ``commits``
        table; a commit every file holds, with the same time stamp (one per
        commit, written to every file), is one the whole store went
        through. The run resumes from the newest such commit, and what came
        after it runs again. None: the files are refused (``refused``), as
        a file lost and re-created (it holds no commit) or restored from
        too long ago is.
        """
        held: set[tuple[int, str]] | None = None
        for conn in self.conns.values():
            rows = set(conn.execute("SELECT epoch, committed_at FROM commits").fetchall())
            held = rows if held is None else held & rows
        if not held:
            raise refused
        epoch = max(held)[0]
        logger.warning(
            "the partition files in %s come from different moments (last committed epochs "
            "%s): resuming from epoch %d, the newest commit every file holds; the input "
            "after it is read again",
            db_dir,
            tops,
            epoch,
        )
        return int(epoch)

    def _complete_epoch(self) -> int:
        conn = self.conns[0]
        has_table = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'complete'"
        ).fetchone()
        self._complete_table = has_table is not None
        if not self._complete_table:
            return 0
        row = conn.execute("SELECT MAX(epoch) FROM complete").fetchone()
        return int(row[0] or 0)

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

    def step_kinds(self) -> dict[str, str]:
        """The kind of each step recorded by `record_kinds` (none before it ever ran)."""
        conn = self.conns[0]
        has_table = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'step_kinds'"
        ).fetchone()
        if has_table is None:
            return {}
        return dict(conn.execute("SELECT step_id, kind FROM step_kinds").fetchall())

    def record_kinds(self, kinds: Mapping[str, str]) -> None:
        """Record the kind of each step (in file 0), replacing what was recorded."""
        first = self.conns[0]
        with _transaction(first, self.paths[0], "recording the step kinds in"):
            first.execute(_KINDS_TABLE)
            first.executemany("INSERT OR REPLACE INTO step_kinds VALUES (?, ?)", kinds.items())

    def where(self, step_id: str, state_key: str) -> str:
        """The partition file of one state key of one step, for messages."""
        return str(partition_path(self.db_dir, self.part_of(step_id, state_key)))

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
        """Drop rows of epochs past the committed one (a crashed run's).

        Files are done in reverse index order: a crash in the middle leaves
        the files still ahead first in index order, as a crash during a
        commit does, so the next open accepts them (see `_check_tops`).
        """
        for index in sorted(self.conns, reverse=True):
            self._discard_file(index)

    def _discard_file(self, index: int) -> None:
        conn = self.conns[index]
        with _transaction(conn, self.paths[index], "discarding uncommitted rows in"):
            dropped = conn.execute("DELETE FROM snaps WHERE epoch > ?", (self.committed,))
            conn.execute("DELETE FROM commits WHERE epoch > ?", (self.committed,))
            if index == 0 and self._complete_table:
                # Resumed from a commit before the complete one (`_common_commit`).
                conn.execute(
                    "UPDATE complete SET epoch = ? WHERE epoch > ?",
                    (self.committed, self.committed),
                )
        self._rows[index] -= dropped.rowcount

    def commit(
        self, epoch: int, changes: Changes, worker_count: int, keep_from: int | None
    ) -> None:
        """Write one epoch's changes, then mark it committed, file by file.

        Files are committed in index order (what `_check_tops` relies on);
        once all are, file 0 records ``epoch`` as complete.

        Args:
            epoch: The epoch being committed.
            changes: New snapshot bytes (``None``: the state was deleted).
            worker_count: Recorded with the commit, for diagnostics.
            keep_from: Superseded rows older than this epoch are deleted;
                it must be below ``epoch``, so that a resume from the epoch
                before this one (after a crash mid-commit) finds its rows.

        Raises:
            sqlite3.Error: The error of SQLite (a full disk, say), with a
                note naming the file and the epoch; the files committed
                before it keep ``epoch``, which a resume then discards.
        """
        by_part: dict[int, list[tuple[str, bytes, int, bytes | None]]] = {}
        for (step_id, key), ser in changes.items():
            row = (step_id, _key_blob(key), epoch, ser)
            by_part.setdefault(self.part_of(step_id, key), []).append(row)
        stamp = datetime.now(UTC).isoformat()
        for index in range(self.count):
            rows = by_part.get(index, [])
            self._commit_file(index, epoch, rows, worker_count, stamp, keep_from)
            self._remember(index, epoch, rows)
        self.committed = epoch
        first = self.conns[0]
        with _transaction(first, self.paths[0], f"marking epoch {epoch} complete in"):
            if not self._complete_table:
                first.execute(_COMPLETE_TABLE)
                self._complete_table = True
            first.execute("DELETE FROM complete")
            first.execute("INSERT INTO complete VALUES (?)", (epoch,))

    def _commit_file(
        self,
        index: int,
        epoch: int,
        rows: list[tuple[str, bytes, int, bytes | None]],
        worker_count: int,
        stamp: str,
        keep_from: int | None,
    ) -> None:
        """Commit ``epoch`` to one file, in one transaction."""
        conn = self.conns[index]
        with _transaction(conn, self.paths[index], f"committing epoch {epoch} to"):
            if rows:
                conn.executemany("INSERT OR REPLACE INTO snaps VALUES (?, ?, ?, ?)", rows)
            conn.execute(
                "INSERT OR REPLACE INTO commits VALUES (?, ?, ?)", (epoch, worker_count, stamp)
            )
            deleted = 0
            if keep_from is not None:
                keys = self._keys_to_collect(index, keep_from)
                deleted = _collect_garbage(conn, keep_from, keys)
        # A row per key and epoch: each inserted row is a new one.
        self._rows[index] += len(rows) - deleted
        if keep_from is not None:
            # Collected, and committed: the keys up to it are done with.
            self._collected_to[index] = keep_from
            written = self._written.get(index, {})
            for done in [e for e in written if e <= keep_from]:
                self._remembered -= len(written.pop(done))

    def _keys_to_collect(self, index: int, keep_from: int) -> set[tuple[str, bytes]] | None:
        """The keys file ``index`` wrote up to ``keep_from`` since its last collection.

        None when they are not all known: the collection looks at every row.
        """
        since = self._remembered_from.get(index)
        last = self._collected_to.get(index)
        if since is None or last is None or last < since - 1:
            return None
        due: set[tuple[str, bytes]] = set()
        for epoch, keys in self._written[index].items():
            if epoch <= keep_from:
                due |= keys
        # Looking up one key's rows costs about as much as two rows of a look
        # at every row: when over half the rows are due, that is cheaper.
        return due if 2 * len(due) < self._rows[index] else None

    def _remember(
        self, index: int, epoch: int, rows: list[tuple[str, bytes, int, bytes | None]]
    ) -> None:
        """Note the keys ``epoch`` wrote to file ``index``, for its next collections."""
        if index not in self._remembered_from:
            self._remembered_from[index] = epoch
            self._written[index] = {}
        if not rows:
            return
        if self._remembered + len(rows) > REMEMBERED_KEYS:
            # Too many to keep in memory: every file starts again from its
            # next epoch, and looks at every row until then.
            self._remembered_from.clear()
            self._written.clear()
            self._remembered = 0
            return
        self._written[index].setdefault(epoch, set()).update((row[0], row[1]) for row in rows)
        self._remembered += len(rows)

    def close(self) -> None:
        """Close every file, then give up the lock of the directory."""
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()
        lock, self._lock = self._lock, None
        if lock is not None:
            lock.release()


def _names(indexes: list[int]) -> str:
    return ", ".join(f"part-{i}.sqlite3" for i in sorted(indexes))


def _check_access(db_dir: Path, found: Mapping[int, Path]) -> None:
    """Refuse files this process may not read and write, naming them.

    SQLite would report them as unreadable databases, which reads as if the
    files were damaged; an operator might then delete the state.
    """
    effective = os.access in os.supports_effective_ids
    denied: list[str] = []
    # SQLite makes each file's -wal and -shm beside it, and removes them.
    if not os.access(db_dir, os.R_OK | os.W_OK | os.X_OK, effective_ids=effective):
        denied.append(f"the directory {db_dir}")
    paths = [db_dir / LOCK_NAME]
    for path in sorted(found.values()):
        paths += [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    for path in paths:
        # Asked after access fails: SQLite removes a -shm or -wal when another
        # run's last connection closes, which must not read as a denial.
        if not os.access(path, os.R_OK | os.W_OK, effective_ids=effective) and path.exists():
            denied.append(str(path))
    if denied:
        msg = (
            f"recovery directory {db_dir}: this process (uid {uid()}) may not read and write "
            f"{', '.join(denied)}. Fix the owner or the mode (or mount it read-write); "
            "this says nothing about the files' contents"
        )
        raise RecoveryPermissionError(msg)


#: Tables of a Bytewax recovery partition that aiowax's files do not have.
_BYTEWAX_TABLES = frozenset({"parts", "exs", "fronts"})


def _check_written_by_aiowax(path: Path) -> None:
    """Refuse ``path`` unless it is an aiowax partition file; change nothing in it.

    Read-only: a read-write connection would, on closing, move what a
    crashed writer left in the file's ``-wal`` into the file. A read-only
    one leaves an empty ``-wal`` and a ``-shm`` (its index) beside a file
    in WAL mode, so the file is first read as it is on disk, which makes
    none: that tells an aiowax or a Bytewax file apart in every usual case.
    Only when it does not (tables not yet copied from the ``-wal``, or a
    page read while another run writes it) is the ``-wal`` read as well.
    """
    _check_regular_file(path)
    with contextlib.suppress(sqlite3.DatabaseError):
        tables = _tables(path, "immutable=1")
        if "meta" in tables:
            return
        if _BYTEWAX_TABLES.issubset(tables):
            _refuse_bytewax(path)
    try:
        tables = _tables(path, "mode=ro")
    except sqlite3.DatabaseError as error:
        raise _open_error(path, error) from None
    if not tables and path.stat().st_size == 0:
        msg = (
            f"{path} is empty, not a partition file ('python -m aiowax.recovery DIR COUNT' "
            "writes its tables into each): was the directory's making cut short? Then make it "
            "again; if the file had snapshots, restore the whole directory from one backup"
        )
        raise InconsistentPartitionsError(msg)
    if "meta" in tables:
        return
    if _BYTEWAX_TABLES.issubset(tables):
        _refuse_bytewax(path)
    found = ", ".join(sorted(tables)) or "none"
    msg = f"{path} is not an aiowax partition file: it has no meta table (tables: {found})"
    raise InconsistentPartitionsError(msg)


def _tables(path: Path, mode: str) -> set[str]:
    """The names of the tables in ``path``, opened with the URI parameter ``mode``."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?{mode}", uri=True)
    try:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    finally:
        conn.close()
    return {row[0] for row in rows}


def _refuse_bytewax(path: Path) -> NoReturn:
    msg = (
        f"{path} is a Bytewax recovery partition, not an aiowax one: aiowax cannot resume "
        "Bytewax's snapshots; give the flow a new directory made with "
        "'python -m aiowax.recovery DIR COUNT' (this one was only read)"
    )
    raise InconsistentPartitionsError(msg)


def _check_regular_file(path: Path) -> None:
    """Refuse ``path`` unless it is a regular file (or a link to one).

    SQLite reports a directory as a "disk I/O error", which reads as a
    failing disk, and would wait for ever to read a named pipe.
    """
    try:
        mode = path.stat().st_mode
    except OSError as error:
        # A link to nothing (or a loop of links), or a file gone since listed.
        if path.is_symlink():
            msg = (
                f"{path} is a symbolic link that leads to no file "
                f"({os.path.realpath(path)}: {error.strerror})"
            )
        else:
            msg = f"{path} cannot be read: {error.strerror}"
        raise InconsistentPartitionsError(msg) from None
    if stat.S_ISREG(mode):
        return
    what = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
    msg = (
        f"{path} is {what}, not a partition file: partition files are SQLite files that "
        "'python -m aiowax.recovery DIR COUNT' makes; move it out of the directory"
    )
    raise InconsistentPartitionsError(msg)


def _open_error(path: Path, error: sqlite3.DatabaseError) -> Exception:
    """What to raise for ``error`` from opening ``path``."""
    code = (getattr(error, "sqlite_errorcode", 0) or 0) & 0xFF
    if code in (_SQLITE_PERM, _SQLITE_READONLY) or (
        code == _SQLITE_CANTOPEN and not os.access(path, os.R_OK | os.W_OK)
    ):
        msg = (
            f"cannot open {path} for reading and writing: {error} (this process runs as "
            f"uid {uid()}); fix the owner or the mode"
        )
        return RecoveryPermissionError(msg)
    if code in (_SQLITE_NOTADB, _SQLITE_CORRUPT):
        msg = (
            f"{path} is damaged, or is not a partition file (SQLite: {error}): restore the "
            "whole directory from one backup, or start over in a new directory"
        )
        return InconsistentPartitionsError(msg)
    if "no such table" in str(error):
        return InconsistentPartitionsError(f"{path} is not an aiowax partition file: {error}")
    error.add_note(f"while opening the partition file {path}")
    return error


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, path: Path, doing: str) -> Iterator[None]:
    """One transaction on ``conn``; an error leaves with a note naming ``path``.

    SQLite rolls a transaction back by itself on some errors (a full disk
    among them): a ROLLBACK then fails with "no transaction is active",
    which must not replace the error that caused it.
    """
    try:
        conn.execute("BEGIN")
        yield
        conn.execute("COMMIT")
    except BaseException as error:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        if isinstance(error, sqlite3.Error):
            error.add_note(f"while {doing} {path}")
        raise


def _key_blob(key: str) -> bytes:
    # Keys are any str, lone surrogates included, which SQLite text refuses.
    return key.encode("utf-8", "surrogatepass")


def _key_text(blob: bytes) -> str:
    return blob.decode("utf-8", "surrogatepass")


def _collect_garbage(
    conn: sqlite3.Connection, keep_from: int, keys: set[tuple[str, bytes]] | None
) -> int:
    """Delete the rows no resume from ``keep_from`` or later needs; return how many."""
    # Keep, per key, the newest row before ``keep_from`` (what a resume from
    # that epoch needs) and everything after it; drop older rows, and drop
    # deletions once nothing older than them is left to hide. Only a key
    # written since the last collection (``keys``) can have a new newest
    # row before ``keep_from``: looking at every row instead cost each
    # commit as much as the whole store (135 ms at 300,000 rows).
    before = conn.total_changes
    if keys is not None:
        # Plain "?" placeholders: numbered ones with a sequence are deprecated
        # from Python 3.12.
        conn.executemany(
            """
            DELETE FROM snaps WHERE step_id = ? AND state_key = ? AND epoch < (
                SELECT MAX(epoch) FROM snaps
                WHERE step_id = ? AND state_key = ? AND epoch <= ?
            )
            """,
            [(step_id, key, step_id, key, keep_from) for step_id, key in keys],
        )
        conn.executemany(
            "DELETE FROM snaps WHERE step_id = ? AND state_key = ? AND epoch <= ? AND ser IS NULL",
            [(step_id, key, keep_from) for step_id, key in keys],
        )
    else:
        _collect_every_row(conn, keep_from)
    deleted = conn.total_changes - before
    conn.execute(
        "DELETE FROM commits WHERE epoch < (SELECT MAX(epoch) FROM commits WHERE epoch <= ?)",
        (keep_from,),
    )
    return deleted


def _collect_every_row(conn: sqlite3.Connection, keep_from: int) -> None:
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
