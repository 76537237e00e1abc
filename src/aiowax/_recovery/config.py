"""What a user configures about recovery, and how state is serialised."""

from __future__ import annotations

import pickle
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

    Args:
        db_dir: A directory of partition files made by `init_db_dir`.
        backup_interval: How long superseded snapshots are kept before they
            are deleted (so an older backup of the files stays usable);
            ``None`` keeps only what resuming from the latest epoch needs.
        snapshot_serde: An object with ``ser(obj) -> bytes`` and
            ``de(bytes) -> obj``; `pickle` by default.
    """

    db_dir: Path
    backup_interval: timedelta | None = None
    snapshot_serde: SnapshotSerde | None = None

    def __init__(
        self,
        db_dir: str | Path,
        backup_interval: timedelta | None = None,
        snapshot_serde: SnapshotSerde | None = None,
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
        object.__setattr__(self, "db_dir", Path(db_dir))
        object.__setattr__(self, "backup_interval", backup_interval)
        object.__setattr__(self, "snapshot_serde", snapshot_serde)

    @property
    def serde(self) -> SnapshotSerde:
        """The serde in use."""
        return self.snapshot_serde or PickleSerde()
