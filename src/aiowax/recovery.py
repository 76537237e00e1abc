"""Recovery: resume a flow from its last committed epoch after a crash.

Make a recovery directory once with `init_db_dir` (or
``python -m aiowax.recovery DB_DIR COUNT``), then pass
``recovery_config=RecoveryConfig(DB_DIR)`` to `aiowax.run` or
`aiowax.testing.run_main`. At the end of every epoch the flow snapshots its
sources' positions, its keyed state and its stateful sinks; a new run with
the same configuration restores the last epoch every worker finished and
continues from there (state exactly once, output at least once).

A run holds a lock on its recovery directory: a second run on it, in this
process or another, is refused with `RecoveryLockedError`. A resume is
refused when the partition files disagree (`MissingPartitionsError`,
`InconsistentPartitionsError`: a file lost or restored from an older
backup) and when snapshots match no step or partition of the flow
(`UnmatchedSnapshotsError`: a step or partition renamed since); the
directory or its files not being readable and writable is a
`RecoveryPermissionError`. docs/recovery.md explains what is promised and
how to drop unmatched snapshots on purpose
(``RecoveryConfig(..., discard_unmatched=True)``).
"""

from __future__ import annotations

import argparse
import sys

from aiowax._errors import (
    InconsistentPartitionsError,
    MissingPartitionsError,
    NoPartitionsError,
    RecoveryError,
    RecoveryLockedError,
    RecoveryPermissionError,
    UnmatchedSnapshotsError,
)
from aiowax._recovery.config import RecoveryConfig
from aiowax._recovery.store import init_db_dir
from aiowax._util import fixup_module_metadata

__all__ = [
    "InconsistentPartitionsError",
    "MissingPartitionsError",
    "NoPartitionsError",
    "RecoveryConfig",
    "RecoveryError",
    "RecoveryLockedError",
    "RecoveryPermissionError",
    "UnmatchedSnapshotsError",
    "init_db_dir",
    "main",
]


def main(argv: list[str] | None = None) -> int:
    """Command line: ``python -m aiowax.recovery DB_DIR COUNT``.

    Returns:
        The exit code: 0 on success, 2 on a usage error.
    """
    parser = argparse.ArgumentParser(
        prog="python -m aiowax.recovery",
        description="Create the SQLite partition files of a recovery directory.",
    )
    parser.add_argument("db_dir", metavar="DB_DIR", help="the recovery directory")
    parser.add_argument("count", metavar="COUNT", type=int, help="how many partition files")
    args = parser.parse_args(argv)
    try:
        init_db_dir(args.db_dir, args.count)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"created {args.count} partition file(s) in {args.db_dir}")
    return 0


fixup_module_metadata(__name__, __all__, globals())

if __name__ == "__main__":
    raise SystemExit(main())
