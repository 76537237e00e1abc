"""The lock of a recovery directory: one run at a time.

Two runs on one directory (an overlapping deploy, two pods on a shared
volume, two `aiowax.run` calls in one process) would both commit into the
same partition files, and a resume would restore a mix of their snapshots.
So a run holds an exclusive lock on ``aiowax.lock`` in the directory for as
long as it has the partition files open, and a second run is refused at once
with a `RecoveryLockedError` naming the holder.

The lock is ``flock``: the kernel drops it when the holder's file is closed,
which includes any death of the process (even ``SIGKILL``), so it never goes
stale. ``flock`` locks belong to an open file description, so a second
``open`` in the same process conflicts too; POSIX ``fcntl`` locks would not
(they are per process). Where ``flock`` is emulated with POSIX locks (some
network file systems), a registry of the lock files this process holds still
refuses a second run in the same process. The lock file is never deleted:
deleting it would let a waiting run lock a file that a third run no longer
sees. On Windows only that registry applies.

The holder writes its pid, host and start time into the file, for the
message of the runs it refuses; the file's contents are only informative.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from aiowax._errors import RecoveryError, RecoveryLockedError, RecoveryPermissionError

if sys.platform != "win32":
    import fcntl

#: The lock file's name in a recovery directory.
LOCK_NAME = "aiowax.lock"

#: Errors that mean "not allowed" rather than "broken".
PERMISSION_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})

# The lock files this process holds, by (device, inode): what refuses a
# second run in this process where flock alone would not.
_held: set[tuple[int, int]] = set()
_held_guard = threading.Lock()


def permission_error(path: Path, error: OSError, doing: str) -> RecoveryPermissionError:
    """The `RecoveryPermissionError` for ``error``, naming ``path``."""
    reason = os.strerror(error.errno) if error.errno is not None else str(error)
    msg = (
        f"cannot {doing} {path}: {reason.lower()} (this process runs as uid {uid()}); "
        "the recovery directory and its files must be readable and writable by the run"
    )
    return RecoveryPermissionError(msg)


def uid() -> str:
    """The effective uid, which permissions are checked against ("?" on Windows)."""
    geteuid = getattr(os, "geteuid", None)
    return str(geteuid()) if geteuid is not None else "?"


class DirLock:
    """A held lock on a recovery directory; `release` gives it up."""

    def __init__(self, path: Path, fd: int, key: tuple[int, int]) -> None:
        self.path = path
        self._fd: int | None = fd
        self._key = key

    def release(self) -> None:
        """Give the lock up (closing the file drops the flock); idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with _held_guard:
            _held.discard(self._key)
        os.close(fd)


def lock_dir(db_dir: Path) -> DirLock:
    """Take the lock of ``db_dir``, or say who holds it.

    Raises:
        RecoveryLockedError: Another run holds it.
        RecoveryPermissionError: The lock file cannot be created or opened.
    """
    path = db_dir / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as error:
        if error.errno in PERMISSION_ERRNOS:
            raise permission_error(path, error, "create or open the lock file") from error
        raise
    try:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        with _held_guard:
            if key in _held:
                raise RecoveryLockedError(
                    _locked_message(db_dir, fd, "another run in this process")
                )
            if sys.platform != "win32":
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise RecoveryLockedError(_locked_message(db_dir, fd, "another run")) from None
                except OSError as error:
                    # ENOLCK (NFS without a lock daemon), say: the directory
                    # cannot be locked, so it cannot be used safely.
                    msg = (
                        f"cannot lock the recovery directory {db_dir}: {error.strerror or error} "
                        f"(on {path}); keep recovery directories on a file system that "
                        "supports flock (a local disk, not an NFS mount without locking)"
                    )
                    raise RecoveryError(msg) from error
            _held.add(key)
        # Only the message of a refused run needs it: a full disk, say,
        # must not stop this one.
        with contextlib.suppress(OSError):
            _write_holder(fd)
    except BaseException:
        os.close(fd)
        raise
    return DirLock(path, fd, key)


def _write_holder(fd: int) -> None:
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    data = (json.dumps(holder) + "\n").encode()
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)


def _locked_message(db_dir: Path, fd: int, who: str) -> str:
    return (
        f"recovery directory {db_dir} is in use by {who} ({_holder(fd)}); two runs on one "
        "directory would mix their snapshots. Wait for that run to end or stop it, or "
        "give this one a recovery directory of its own"
    )


def _holder(fd: int) -> str:
    """Who holds the lock, from what the holder wrote into the lock file."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        holder = json.loads(raw.decode()) if raw else None
    except (OSError, ValueError):
        holder = None
    if not isinstance(holder, dict):
        # It took the lock an instant ago and has not written it yet.
        return "holder not recorded yet"
    here = " (this host)" if holder.get("host") == socket.gethostname() else ""
    return (
        f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')!r}{here}, "
        f"since {holder.get('since', '?')}"
    )
