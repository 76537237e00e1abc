"""The partition files (`aiowax._recovery.store`): damage, a full disk, permissions.

A resume must never silently start from an older state, or from none: a
partition file lost after a commit is refused (issue 10, D5). A full disk
reports SQLite's own error, and a resume after space is freed is correct
(U1). A directory or files this process may not write are reported as
such, never as damaged files (U5).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import aiowax._recovery.store as store_module
from aiowax.dataflow import Dataflow
from aiowax.recovery import (
    InconsistentPartitionsError,
    RecoveryConfig,
    init_db_dir,
)
from aiowax.testing import TestingSink, TestingSource, run_main


def _counting(items: list[Any], out: list[Any]) -> Dataflow:
    flow = Dataflow()
    flow.input("inp", TestingSource(items))
    flow.map("key", lambda x: (x, 1))
    flow.stateful_map("count", lambda: 0, lambda c, one: (c + one, c + one))
    flow.output("out", TestingSink(out))
    return flow


def _replace_with_empty(db_dir: Path, index: int, scratch: Path) -> None:
    """Lose partition file ``index`` and re-create it empty (a fresh image)."""
    init_db_dir(scratch, 3)
    name = f"part-{index}.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        (db_dir / f"{name}{suffix}").unlink(missing_ok=True)
    shutil.copy(scratch / name, db_dir / name)


# -- D5: a lost partition file ---------------------------------------------------------


@pytest.mark.parametrize("lost", [0, 1, 2])
def test_a_partition_file_lost_after_one_commit_is_refused(tmp_path: Path, lost: int) -> None:
    db_dir = tmp_path / "db"
    init_db_dir(db_dir, 3)
    first: list[Any] = []
    # The default epochs of 10 s: this short run commits once, at its end.
    run_main(_counting(["a", "b", "c", "a"], first), recovery_config=RecoveryConfig(db_dir))
    assert sorted(first) == [("a", 1), ("a", 2), ("b", 1), ("c", 1)]
    _replace_with_empty(db_dir, lost, tmp_path / "fresh")
    second: list[Any] = []
    with pytest.raises(InconsistentPartitionsError) as info:
        run_main(
            _counting(["a", "b", "c", "a", "a"], second), recovery_config=RecoveryConfig(db_dir)
        )
    message = str(info.value)
    assert f"part-{lost}.sqlite3 never committed epoch" in message
    assert "come from different points in time" in message
    assert str(db_dir) in message
    assert second == []


@pytest.mark.parametrize("lost", [0, 2])
def test_a_partition_file_lost_after_many_commits_is_refused(tmp_path: Path, lost: int) -> None:
    db_dir = tmp_path / "db"
    init_db_dir(db_dir, 3)
    eof = TestingSource.EOF
    items: list[Any] = ["a", "b", eof(), "c", eof(), "a"]
    for _ in range(3):
        run_main(_counting(items, []), recovery_config=RecoveryConfig(db_dir))
    _replace_with_empty(db_dir, lost, tmp_path / "fresh")
    with pytest.raises(InconsistentPartitionsError, match=f"part-{lost}.sqlite3 never committed"):
        run_main(_counting(items, []), recovery_config=RecoveryConfig(db_dir))


# -- files backed up one by one (helper-56) ---------------------------------------------------

_ABORT = TestingSource.ABORT
_EOF = TestingSource.EOF
EPOCH = timedelta(milliseconds=1)


def _back_up(db_dir: Path, index: int, backup: Path) -> None:
    """Copy partition file ``index`` (and its log) into ``backup``, as a backup job would."""
    backup.mkdir(exist_ok=True)
    for path in db_dir.glob(f"part-{index}.sqlite3*"):
        shutil.copy(path, backup / path.name)


def test_files_backed_up_at_different_moments_resume_from_their_newest_common_commit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Bytewax's backup_interval: superseded snapshots are kept for a while,
    # so files copied one by one, a few commits apart, still share a commit.
    # They were refused (files "from different points in time"). Epochs of
    # 1 ms: an hour's worth keeps every snapshot of these runs.
    live, backup = tmp_path / "live", tmp_path / "backup"
    init_db_dir(live, 2)
    config = RecoveryConfig(live, backup_interval=timedelta(hours=1))
    items: list[Any] = ["a", "b", _EOF(), "a", "b", _EOF(), "a", _EOF(), "b"]
    out: list[Any] = []
    run_main(_counting(items, out), epoch_interval=EPOCH, recovery_config=config)
    _back_up(live, 1, backup)  # part-1 now...
    for _ in range(2):
        run_main(_counting(items, out), epoch_interval=EPOCH, recovery_config=config)
    _back_up(live, 0, backup)  # ... part-0 two runs (two commits) later
    assert out == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3)]
    restored: list[Any] = []
    with caplog.at_level("WARNING", logger="aiowax.recovery"):
        run_main(
            _counting(items, restored),
            epoch_interval=EPOCH,
            recovery_config=RecoveryConfig(backup),
        )
    # As of part-1's copy: a and b counted once each; what came after runs again.
    assert restored == [("a", 2), ("b", 2)]
    assert "resuming from epoch" in caplog.text and "different moments" in caplog.text
    # And the directory is whole again: the next run goes on from there.
    again: list[Any] = []
    run_main(_counting(items, again), epoch_interval=EPOCH, recovery_config=RecoveryConfig(backup))
    assert again == [("a", 3)]


def test_files_backed_up_too_far_apart_are_still_refused(tmp_path: Path) -> None:
    # Without backup_interval, each commit collects what the one before it
    # superseded: files two commits apart share none.
    live, backup = tmp_path / "live", tmp_path / "backup"
    init_db_dir(live, 2)
    config = RecoveryConfig(live)
    items: list[Any] = ["a", "b", _ABORT(), "a", "b", _ABORT(), "a", _ABORT(), "b"]
    run_main(_counting(items, []), epoch_interval=timedelta(0), recovery_config=config)
    _back_up(live, 1, backup)
    for _ in range(2):
        run_main(_counting(items, []), epoch_interval=timedelta(0), recovery_config=config)
    _back_up(live, 0, backup)
    with pytest.raises(InconsistentPartitionsError, match="different points in time"):
        run_main(_counting(items, []), recovery_config=RecoveryConfig(backup))


def test_a_file_of_another_directory_shares_no_commit_even_at_the_same_epochs(
    tmp_path: Path,
) -> None:
    # Two stores that went through the same epochs: a commit is the same one
    # only with the same time stamp, so their files are not mixed.
    first, second = tmp_path / "first", tmp_path / "second"
    items: list[Any] = ["a", "b", _EOF(), "a", "b", _EOF(), "a"]
    tops = []
    for db_dir in (first, second):
        init_db_dir(db_dir, 2)
        config = RecoveryConfig(db_dir, backup_interval=timedelta(hours=1))
        for _ in range(2):
            run_main(_counting(items, []), epoch_interval=timedelta(0), recovery_config=config)
        tops.append(_commits(db_dir))
    assert tops[0][0] == tops[1][0]  # the same epochs in both
    for path in first.glob("part-1.sqlite3*"):
        path.unlink()
    _back_up(second, 1, first)
    with pytest.raises(InconsistentPartitionsError, match="different points in time"):
        run_main(_counting(items, []), recovery_config=RecoveryConfig(first))


def _commits(db_dir: Path) -> tuple[list[int], list[str]]:
    """The epochs part-0 holds commits of, and their time stamps."""
    conn = sqlite3.connect(db_dir / "part-0.sqlite3")
    try:
        rows = conn.execute("SELECT epoch, committed_at FROM commits ORDER BY epoch").fetchall()
    finally:
        conn.close()
    return [epoch for epoch, _ in rows], [stamp for _, stamp in rows]


def test_a_crash_in_the_first_commit_still_resumes_from_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a lost file must not be taken for, and what must keep working:
    # the run dies after the first file of its first commit.
    db_dir = tmp_path / "db"
    init_db_dir(db_dir, 3)
    real = store_module.Store._commit_file

    class Killed(Exception):
        pass

    def commit_file(self: Any, index: int, *rest: Any) -> None:
        if index >= 1:
            raise Killed
        real(self, index, *rest)

    monkeypatch.setattr(store_module.Store, "_commit_file", commit_file)
    with pytest.raises(Killed):
        run_main(_counting(["a", "b"], []), recovery_config=RecoveryConfig(db_dir))
    monkeypatch.undo()
    out: list[Any] = []
    run_main(_counting(["a", "b", "a"], out), recovery_config=RecoveryConfig(db_dir))
    assert sorted(out) == [("a", 1), ("a", 2), ("b", 1)]


@pytest.mark.parametrize("done", [1, 2])
def test_a_crash_while_discarding_a_torn_commit_still_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, done: int
) -> None:
    # A run dies after the first two files of a commit; the next dies while
    # it discards that commit, after ``done`` files. The files left ahead
    # must still look like a torn commit, not like damage.
    db_dir = tmp_path / "db"
    init_db_dir(db_dir, 3)
    eof = TestingSource.EOF
    items: list[Any] = ["a", "b", eof(), "a", "c"]
    run_main(_counting(items, []), recovery_config=RecoveryConfig(db_dir))
    real_commit_file = store_module.Store._commit_file
    real_discard_file = store_module.Store._discard_file

    class Killed(Exception):
        pass

    def commit_file(self: Any, index: int, *rest: Any) -> None:
        if index == 2:
            raise Killed
        real_commit_file(self, index, *rest)

    discarded: list[int] = []

    def discard_file(self: Any, index: int) -> None:
        if len(discarded) == done:
            raise Killed
        discarded.append(index)
        real_discard_file(self, index)

    monkeypatch.setattr(store_module.Store, "_commit_file", commit_file)
    with pytest.raises(Killed):
        run_main(_counting(items, []), recovery_config=RecoveryConfig(db_dir))
    monkeypatch.setattr(store_module.Store, "_commit_file", real_commit_file)
    monkeypatch.setattr(store_module.Store, "_discard_file", discard_file)
    with pytest.raises(Killed):
        run_main(_counting(items, []), recovery_config=RecoveryConfig(db_dir))
    monkeypatch.undo()
    out: list[Any] = []
    run_main(_counting(items, out), recovery_config=RecoveryConfig(db_dir))
    assert sorted(out) == [("a", 2), ("c", 1)]


# -- U1: a full disk ---------------------------------------------------------------------

N_ITEMS = 3000
KEYS = 10


def _filling(out: list[Any]) -> Dataflow:
    """A count per key whose state also grows by 1 KiB per item (~3 MB in all)."""

    def step(state: tuple[int, bytes] | None, i: int) -> tuple[tuple[int, bytes], Any]:
        count, blob = state or (0, b"")
        count += 1
        return (count, blob + os.urandom(1024)), (i, count)

    flow = Dataflow()
    flow.input("inp", TestingSource(range(N_ITEMS), batch_size=50))
    flow.map("key", lambda i: (f"k{i % KEYS}", i))
    flow.stateful_map("big", lambda: None, step)
    flow.output("out", TestingSink(out))
    return flow


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs (root only); grown to 64 MB by ``_grow``."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root on Linux")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _grow(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=64M", str(mount)], check=True)


@pytest.mark.parametrize("full", ["tmpfs", "page_limit"])
def test_a_full_disk_reports_the_sqlite_error_and_resumes_after(
    full: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if full == "tmpfs":
        mount: Path = request.getfixturevalue("small_tmpfs")
        db_dir = mount / "db"
    else:
        # No root: SQLite's own size limit gives the same SQLITE_FULL.
        db_dir = tmp_path / "db"
        real_connect = store_module._connect

        def small_connect(path: Path) -> sqlite3.Connection:
            conn = real_connect(path)
            conn.execute("PRAGMA max_page_count = 200")
            return conn

        monkeypatch.setattr(store_module, "_connect", small_connect)
    init_db_dir(db_dir, 2)
    config = RecoveryConfig(db_dir)
    first: list[Any] = []
    with pytest.raises(sqlite3.OperationalError) as info:
        run_main(_filling(first), epoch_interval=timedelta(0), recovery_config=config)
    # SQLite's error, not the "cannot rollback" of the rollback after it.
    assert str(info.value) == "database or disk is full"
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "while committing epoch" in notes
    assert str(db_dir / "part-") in notes
    if full == "tmpfs":
        _grow(db_dir.parent)
    else:
        monkeypatch.undo()
    second: list[Any] = []
    run_main(_filling(second), epoch_interval=timedelta(0), recovery_config=config)
    # State exactly once: every count, first run's or replayed, is the true one.
    expected = {i: i // KEYS + 1 for i in range(N_ITEMS)}
    seen = [value for _, value in first + second]
    assert {i for i, _ in seen} == set(expected)
    assert all(count == expected[i] for i, count in seen)
    assert first and second


# -- U5: permissions ------------------------------------------------------------------------

NOBODY = 65534


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can enter (pytest's tmp_path is private)."""
    path = Path(tempfile.mkdtemp(prefix="aiowax-perm-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _attempt(db_dir: Path) -> str:
    """Run a flow on ``db_dir``; "ran", or the error it raised."""
    try:
        run_main(_counting(["a"], []), recovery_config=RecoveryConfig(db_dir))
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return "ran"


def _probe(db_dir: Path) -> str:
    """`_attempt` as an unprivileged user: root forks a child that drops to nobody.

    (Forked rather than started: the interpreter itself may sit where
    nobody may not read it.)
    """
    if os.geteuid() != 0:
        return _attempt(db_dir)
    read, write = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads, 3.12+
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            said = _attempt(db_dir)
        except BaseException as error:
            said = f"the probe failed: {error!r}"
        os.write(write, said.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        said = pipe.read().decode()
    os.waitpid(pid, 0)
    return said


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
@pytest.mark.parametrize("damage", ["directory read-only", "files read-only", "other owner"])
def test_permission_problems_are_named_as_such(shared_dir: Path, damage: str) -> None:
    db_dir = shared_dir / "db"
    init_db_dir(db_dir, 2)
    run_main(_counting(["a"], []), recovery_config=RecoveryConfig(db_dir))  # healthy
    files = sorted(db_dir.iterdir())
    root = os.geteuid() == 0
    if root:
        for path in [db_dir, *files]:
            os.chown(path, NOBODY, NOBODY)
    if damage == "directory read-only":
        db_dir.chmod(0o555)
        denied = [f"the directory {db_dir}"]
    elif damage == "files read-only":
        for path in files:
            path.chmod(0o444)
        denied = [str(path) for path in files]
    else:
        if not root:
            pytest.skip("needs root to give the files to another user")
        for path in files:
            os.chown(path, 0, 0)
            path.chmod(0o600)
        denied = [str(path) for path in files]
    try:
        said = _probe(db_dir)
    finally:
        db_dir.chmod(0o755)
    assert said.startswith("RecoveryPermissionError: ")
    assert "not an aiowax partition file" not in said
    assert "may not read and write" in said
    for path in denied:
        assert path in said
    # Once fixed, the same files resume.
    for path in files:
        path.chmod(0o644)
        if root:
            os.chown(path, NOBODY, NOBODY)
    assert _probe(db_dir) == "ran"


# -- garbage collection: a commit looks at the keys written since the last one -----------


def _all_rows(store: Any) -> list[tuple[int, str, bytes, int, bytes | None]]:
    return sorted(
        (index, *row)
        for index, conn in store.conns.items()
        for row in conn.execute("SELECT step_id, state_key, epoch, ser FROM snaps")
    )


@pytest.mark.parametrize("keep_epochs", [0, 1, 3])
def test_each_commit_collects_as_if_it_looked_at_every_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_epochs: int
) -> None:
    # A commit used to look at every row of the store to find the ones
    # superseded (135 ms a commit at 300,000 rows, however few keys changed):
    # now at the rows of the keys written since the last collection. Two
    # stores take the same random commits (writes and deletions, keys coming
    # back), one collecting that way, one looking at every row each time;
    # they hold the same rows after every commit, and when the keys to
    # remember overflow the bound.
    import random

    rng = random.Random(16)
    stores = []
    for name in ("keys", "every_row"):
        init_db_dir(tmp_path / name, 2)
        stores.append(store_module.Store(tmp_path / name))
    keys_store, every_row = stores
    bound = 8 * (keep_epochs + 1)  # overflowed now and then
    monkeypatch.setattr(store_module, "REMEMBERED_KEYS", bound)
    looked_at: list[str] = []  # per collection of keys_store: "keys" or "every row"
    collect = store_module._collect_garbage

    def spy(conn: sqlite3.Connection, keep_from: int, keys: Any) -> int:
        if conn in keys_store.conns.values():
            looked_at.append("every row" if keys is None else "keys")
        return collect(conn, keep_from, keys)

    monkeypatch.setattr(store_module, "_collect_garbage", spy)
    try:
        for epoch in range(1, 120):
            changes = {
                ("step", f"k{rng.randrange(30)}"): (
                    None if rng.random() < 0.3 else f"{epoch}".encode()
                )
                for _ in range(rng.randrange(0, 12))
            }
            keep_from = epoch - 1 - keep_epochs
            keep = keep_from if keep_from > 0 else None
            keys_store.commit(epoch, changes, 1, keep)
            every_row._collected_to.clear()  # so it looks at every row
            every_row.commit(epoch, changes, 1, keep)
            rows = _all_rows(keys_store)
            assert rows == _all_rows(every_row), epoch
            # The count of rows it keeps (to choose between the two) is right.
            assert sum(keys_store._rows.values()) == len(rows)
        # By keys; by every row at the start, and after the bound overflowed
        # until the epochs after the last collection are all remembered again.
        assert looked_at.count("keys") > 20 and looked_at.count("every row") > 6
        assert keys_store._remembered <= bound
    finally:
        for store in stores:
            store.close()


def test_a_commit_is_synced_to_disk_before_it_returns(tmp_path: Path) -> None:
    # helper-56: with synchronous=NORMAL a power cut may roll back the last
    # commits of one partition file and not of another, and the directory is
    # then refused for good. FULL syncs the log at each commit (once an epoch).
    conn = store_module._connect(tmp_path / "x.sqlite3")
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    finally:
        conn.close()


def test_a_shm_file_removed_while_the_access_check_runs_is_no_denial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another run's last connection closing removes its -shm: found by the
    # check, gone when asked for access. It was reported as "may not read
    # and write" (helper-60's stress of cancelled runs).
    db_dir = tmp_path / "db"
    init_db_dir(db_dir, 1)
    shm = db_dir / "part-0.sqlite3-shm"
    shm.write_bytes(b"")
    real_access = os.access

    def access(path: Any, mode: int, **kwargs: Any) -> bool:
        if Path(path) == shm and shm.exists():
            shm.unlink()  # closed by the other run just now
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(store_module.os, "access", access)
    store = store_module.Store(db_dir)
    store.close()
