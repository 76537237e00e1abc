"""Recovery at run time: restoring state, and committing epochs of snapshots.

Steps hand their snapshots over at each aligned epoch end (sources their
positions, keyed steps the keys they touched, stateful sinks their parts).
The tail of every pipeline on every worker reports when it has passed an
epoch's end; once all have, every snapshot of that epoch is in, and the
writer commits it to the SQLite files from a worker thread, never blocking
the event loop on disk I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import anyio

from aiowax._engine.clock import run_in_thread
from aiowax._engine.context import Tail
from aiowax._recovery.config import RecoveryConfig
from aiowax._recovery.store import Store

#: Marks a state key whose state was dropped during the epoch.
DELETED: Any = object()

#: Epochs that may wait for their commit before sources are held back.
MAX_UNCOMMITTED_EPOCHS = 64


class Recovery:
    """The recovery side of one run."""

    def __init__(
        self,
        config: RecoveryConfig,
        store: Store,
        epoch_interval: float,
        worker_count: int,
        restored: dict[tuple[str, str], bytes],
    ) -> None:
        self.config = config
        self.serde = config.serde
        self.store = store
        self.worker_count = worker_count
        self.resume_epoch = store.committed + 1
        self._restored = restored
        backup = config.backup_interval
        if backup is None or not backup:
            self._keep_epochs = 0
        elif epoch_interval <= 0:
            self._keep_epochs = 1
        else:
            self._keep_epochs = math.ceil(backup.total_seconds() / epoch_interval)
        self._pending: dict[int, dict[tuple[str, str], bytes | None]] = {}
        self._done: dict[Tail, int] = {}
        self._finished: dict[Tail, int] = {}
        self._wake = anyio.Event()
        self._room: anyio.Event | None = None
        #: Epochs committed by this run (for tests and progress reports).
        self.commits = 0

    @classmethod
    async def open(
        cls, config: RecoveryConfig, epoch_interval: float, worker_count: int
    ) -> Recovery:
        """Open the partition files and read what to resume from (off the loop)."""

        def load() -> tuple[Store, dict[tuple[str, str], bytes]]:
            store = Store(config.db_dir)
            try:
                store.discard_uncommitted()
                return store, store.load()
            except BaseException:
                store.close()
                raise

        store, restored = await run_in_thread(load)
        return cls(config, store, epoch_interval, worker_count, restored)

    # -- restoring ---------------------------------------------------------

    def restored(self, step_id: str) -> dict[str, Any]:
        """The restored states of one step, by state key."""
        de = self.serde.de
        return {key: de(ser) for (sid, key), ser in self._restored.items() if sid == step_id}

    # -- snapshotting --------------------------------------------------------

    def record(self, epoch: int, step_id: str, changes: Mapping[str, Any]) -> None:
        """Take the snapshots of one step for ``epoch`` (serialised now)."""
        if not changes:
            return
        ser = self.serde.ser
        pending = self._pending.setdefault(epoch, {})
        for key, state in changes.items():
            pending[(step_id, key)] = None if state is DELETED else ser(state)

    async def wait_for_room(self, epoch: int) -> None:
        """Hold a source back while too many epochs wait to be committed.

        Without it a busy loop could run far ahead of its commits, and a
        crash would then replay that much more.
        """
        while epoch - self.store.committed > MAX_UNCOMMITTED_EPOCHS:
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()

    def tail_done(self, tail: Tail, epoch: int) -> None:
        """A pipeline's tail passed the end of ``epoch``."""
        self._done[tail] = epoch
        self._wake.set()

    def tail_finished(self, tail: Tail, epoch: int) -> None:
        """A pipeline's tail reached the end of input, in ``epoch``."""
        self._finished[tail] = epoch
        self._wake.set()

    def _committable(self, tails: set[Tail]) -> tuple[int, bool]:
        """The newest epoch every tail is past, and whether all finished."""
        running = tails - set(self._finished)
        if not running:
            last = max([*self._finished.values(), *self._pending, self.store.committed])
            return last, True
        return min(self._done.get(t, self.resume_epoch - 1) for t in running), False

    async def writer(self, tails: set[Tail]) -> None:
        """Commit epochs as they complete, until every tail has finished."""
        while True:
            epoch, finished = self._committable(tails)
            if epoch > self.store.committed or (finished and self._pending):
                await self._commit(epoch)
            if finished:
                return
            self._wake = anyio.Event()
            if self._committable(tails)[0] <= self.store.committed:
                await self._wake.wait()

    async def commit_done(self, tails: set[Tail]) -> None:
        """After a failure: commit the epochs every tail had passed.

        They are complete (every snapshot of them was taken before their
        end passed the tails), so a resume replays only the epoch in flight,
        not also the ones the writer had not caught up with yet.
        """
        epoch, _ = self._committable(tails)
        if epoch > self.store.committed:
            with anyio.CancelScope(shield=True):
                await self._commit(epoch)

    async def _commit(self, epoch: int) -> None:
        changes: dict[tuple[str, str], bytes | None] = {}
        for e in sorted(self._pending):
            if e <= epoch:
                changes.update(self._pending[e])
        keep_from = epoch - 1 - self._keep_epochs
        try:
            await run_in_thread(self.store.commit, epoch, changes, self.worker_count, keep_from)
        finally:
            # Forget changes only once they are committed: a commit that is
            # cancelled before its thread ran must not lose them.
            for e in [e for e in self._pending if e <= self.store.committed]:
                del self._pending[e]
            if self._room is not None:
                self._room.set()
                self._room = None
        self.commits += 1

    def close(self) -> None:
        self.store.close()
