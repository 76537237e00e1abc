"""What a user configures about recovery, and how state is serialised."""

from __future__ import annotations

import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol


class SnapshotSerde(Protocol):
    """Turns states into bytes and back; the default uses `pickle`."""

    def ser(self, obj: Any) -> bytes:
        """Serialise one snapshot."""
        ...

    def de(self, data: bytes) -> Any:
        """Deserialise one snapshot."""
        ...


class PickleSerde:
    """The default serde: `pickle`, highest protocol."""

    def ser(self, obj: Any) -> bytes:
        """Serialise with `pickle`."""
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    def de(self, data: bytes) -> Any:
        """Deserialise with `pickle`."""
        return pickle.loads(data)


@dataclass(frozen=True)
class RecoveryConfig:
    """Where and how a flow keeps the snapshots it resumes from.

    A run holds a lock on ``db_dir`` (a second run on it is refused with
    `RecoveryLockedError`), and refuses to resume from snapshots that match
    no step or partition of its flow (`UnmatchedSnapshotsError`); see
    docs/recovery.md.

    Args:
        db_dir: A directory of partition files made by `init_db_dir`.
        backup_interval: How long superseded snapshots are kept before they
            are deleted, so files backed up one by one at different moments
            within it still resume together, from the newest commit all of
            them hold; ``None`` keeps only what resuming from the latest
            epoch needs.
        snapshot_serde: An object with ``ser(obj) -> bytes`` and
            ``de(bytes) -> obj``; `pickle` by default.
        discard_unmatched: Drop, instead of refusing, the snapshots of steps
            or partitions that the flow no longer has (a renamed step, a
            file path spelled differently): their state is lost for good,
            so an input they positioned is read again from its start.
            ``True`` drops them for every step: set it for the one run after
            such a change, not for good, or it would hide the next
            accidental rename. A collection of step ids drops them for those
            steps only, and may stay: for a `DirSource` over a directory
            whose files are deleted once read, say.
    """

    db_dir: Path
    backup_interval: timedelta | None = None
    snapshot_serde: SnapshotSerde | None = None
    discard_unmatched: bool | frozenset[str] = False

    def __init__(
        self,
        db_dir: str | Path,
        backup_interval: timedelta | None = None,
        snapshot_serde: SnapshotSerde | None = None,
        discard_unmatched: bool | Iterable[str] = False,
    ) -> None:
        if not isinstance(db_dir, str | Path):
            msg = f"RecoveryConfig: db_dir must be a path, got {db_dir!r}"
            raise TypeError(msg)
        if backup_interval is not None:
            if not isinstance(backup_interval, timedelta):
                msg = (
                    "RecoveryConfig: backup_interval must be a datetime.timedelta or None, "
                    f"got {backup_interval!r}"
                )
                raise TypeError(msg)
            if backup_interval < timedelta(0):
                msg = (
                    f"RecoveryConfig: backup_interval must not be negative, got {backup_interval!r}"
                )
                raise ValueError(msg)
        if snapshot_serde is not None and not (
            callable(getattr(snapshot_serde, "ser", None))
            and callable(getattr(snapshot_serde, "de", None))
        ):
            msg = (
                "RecoveryConfig: snapshot_serde must have ser(obj) -> bytes and "
                f"de(bytes) -> obj methods, got {snapshot_serde!r}"
            )
            raise TypeError(msg)
        if not isinstance(discard_unmatched, bool):
            discard_unmatched = _step_ids(discard_unmatched)
        object.__setattr__(self, "db_dir", Path(db_dir))
        object.__setattr__(self, "backup_interval", backup_interval)
        object.__setattr__(self, "snapshot_serde", snapshot_serde)
        object.__setattr__(self, "discard_unmatched", discard_unmatched)

    @property
    def serde(self) -> SnapshotSerde:
        """The serde in use."""
        return self.snapshot_serde or PickleSerde()

    def discards(self, step_id: str) -> bool:
        """Whether unmatched snapshots of ``step_id`` are dropped rather than refused."""
        discard = self.discard_unmatched
        return discard if isinstance(discard, bool) else step_id in discard


def _step_ids(value: object) -> frozenset[str]:
    """``discard_unmatched`` given as step ids, checked."""
    msg = (
        "RecoveryConfig: discard_unmatched must be a bool or a collection of step ids, "
        f"got {value!r}"
    )
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise TypeError(msg)
    ids = frozenset(value)
    if not all(isinstance(step_id, str) for step_id in ids):
        raise TypeError(msg)
    return ids
