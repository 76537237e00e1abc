"""Recovery at run time: restoring state, and committing epochs of snapshots.

Steps hand their snapshots over at each aligned epoch end (sources their
positions, keyed steps the keys they touched, stateful sinks their parts).
The tail of every pipeline on every worker reports when it has passed an
epoch's end; once all have, every snapshot of that epoch is in, and the
writer commits it to the SQLite files from a worker thread, never blocking
the event loop on disk I/O.

Snapshots are loaded when the run opens its recovery directory. Once the
graph is wired and before anything runs, `Recovery.check_unmatched` compares
them with the steps and partitions of the flow: a snapshot nothing would
restore means a step or partition was renamed, and resuming anyway would
restore only part of the state (keyed counts, but not the input position
they belong with). It also raises the error of a snapshot that failed to
load, naming its step, key and partition file.
"""

from __future__ import annotations

import enum
import math
import threading
from collections.abc import Callable, Mapping, Set
from datetime import UTC, datetime
from time import perf_counter
from typing import Any, Protocol

import anyio

from aiowax._engine.clock import run_in_thread
from aiowax._engine.context import Tail
from aiowax._engine.errors import fail
from aiowax._errors import UnmatchedSnapshotsError
from aiowax._observe import span
from aiowax._recovery.config import RecoveryConfig
from aiowax._recovery.store import Store

#: Marks a state key whose state was dropped during the epoch.
DELETED: Any = object()


class Frozen:
    """A snapshot serialised when it was taken (`Recovery.freeze`), recorded as is later."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


#: Epochs that may wait for their commit before sources are held back.
MAX_UNCOMMITTED_EPOCHS = 64

#: Keys of unmatched snapshots listed per step in an `UnmatchedSnapshotsError`.
_LISTED_KEYS = 5


class SnapshotStore(Protocol):
    """Where a run's snapshots are committed: SQLite files (`Store`), or Kafka (cluster mode)."""

    #: The newest epoch committed.
    committed: int

    @property
    def db_dir(self) -> Any:
        """What holds the snapshots, for messages."""

    def where(self, step_id: str, state_key: str) -> str:
        """Where one snapshot is kept, for messages."""

    def commit(
        self,
        epoch: int,
        changes: Mapping[tuple[str, str], bytes | None],
        worker_count: int,
        keep_from: int,
    ) -> None:
        """Commit ``epoch`` with ``changes`` (None: deleted); blocking."""

    def close(self) -> None:
        """Release what the store holds."""


class AnyKey(enum.Enum):
    """What `Recovery.check_unmatched` expects of a step whose keys are open."""

    ANY_KEY = "any key"


#: A step whose snapshots may have any key (a keyed step's state keys).
ANY_KEY = AnyKey.ANY_KEY

#: What a flow can restore, by step id: the partition names a source or
#: partitioned sink lists (empty for a step that keeps no snapshots), or
#: `ANY_KEY`.
Expected = Mapping[str, Set[str] | AnyKey]
#: ``moved(saved_name, names_now)``: a source's say on a partition renamed since.
MovedPartition = Callable[[str, Set[str]], "str | None"]


class _Handover:
    """A store opened in a worker thread, and who closes it if the run gives up.

    The thread hands the store over once it is done with it (`give`); the
    run, if it gives up first (`abandon`), leaves the closing to the thread.
    """

    def __init__(self) -> None:
        #: Set once the thread is done, whether it opened the store or failed.
        self.done = threading.Event()
        self._guard = threading.Lock()
        self._store: Store | None = None
        self._abandoned = False

    def give(self, store: Store) -> None:
        """The thread is done with ``store``: hand it over, or close it if abandoned."""
        with self._guard:
            if not self._abandoned:
                self._store = store
                return
        store.close()

    def abandon(self) -> None:
        """The run gives up: close the store if it was handed over, else let the thread."""
        with self._guard:
            self._abandoned = True
            store, self._store = self._store, None
        if store is not None:
            store.close()


class Recovery:
    """The recovery side of one run."""

    def __init__(
        self,
        config: RecoveryConfig,
        store: SnapshotStore,
        epoch_interval: float,
        worker_count: int,
        restored: dict[tuple[str, str], bytes],
    ) -> None:
        self.config = config
        self.serde = config.serde
        self.store = store
        self.worker_count = worker_count
        self.resume_epoch = store.committed + 1
        # The snapshots to resume from: the state keys of each step, and
        # their states, loaded now, before the wiring asks for them. One
        # that fails to load is kept as its error, which `check_unmatched`
        # raises (unless it is dropped): it runs once the graph is wired and
        # nothing has started, where a failure leaves nothing half-built.
        self._keys: dict[str, set[str]] = {}
        self._states: dict[str, dict[str, Any]] = {}
        self._unloadable: dict[tuple[str, str], Exception] = {}
        de = self.serde.de
        for (step_id, key), ser in sorted(restored.items()):
            self._keys.setdefault(step_id, set()).add(key)
            try:
                self._states.setdefault(step_id, {})[key] = de(ser)
            except Exception as error:
                self._unloadable[(step_id, key)] = self._load_error(error, step_id, key)
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
        #: The step kinds the first commit records (see `check_kinds`).
        self._kinds_to_record: dict[str, str] = {}
        #: Epochs committed by this run (for tests and progress reports).
        self.commits = 0
        #: When the last commit ended, and how long it took (for stats).
        self.last_commit_at: datetime | None = None
        self.last_commit_s: float | None = None

    @classmethod
    async def open(
        cls, config: RecoveryConfig, epoch_interval: float, worker_count: int
    ) -> Recovery:
        """Open the partition files and read what to resume from (off the loop)."""
        handover = _Handover()

        def load() -> tuple[Store, dict[tuple[str, str], bytes]]:
            try:
                store = Store(config.db_dir)
                try:
                    store.discard_uncommitted()
                    restored = store.load()
                except BaseException:
                    store.close()
                    raise
                handover.give(store)
                return store, restored
            finally:
                handover.done.set()

        try:
            store, restored = await run_in_thread(load)
            return cls(config, store, epoch_interval, worker_count, restored)
        except BaseException:
            # Also when the run is cancelled while the thread opens the
            # store. A plain asyncio cancellation (task.cancel(),
            # asyncio.timeout) does not wait for the thread, as anyio's
            # does: wait for it here, so that a run that has returned holds
            # no lock. Cancelled again meanwhile, the thread closes the
            # store when it is done; never while it still reads it.
            try:
                with anyio.CancelScope(shield=True):
                    await run_in_thread(handover.done.wait)
            finally:
                handover.abandon()
            raise

    # -- restoring ---------------------------------------------------------

    def restored(self, step_id: str) -> dict[str, Any]:
        """The restored states of one step, by state key.

        Snapshots that failed to load are left out: `check_unmatched`
        raises their error before anything runs.
        """
        return dict(self._states.get(step_id, {}))

    def _load_error(self, error: Exception, step_id: str, key: str) -> Exception:
        path = self.store.where(step_id, key)
        error.add_note(
            f"while loading the snapshot of key {key!r} of step {step_id!r} from {path} "
            f"(epoch {self.store.committed} or before) with {type(self.serde).__name__}; "
            "was its class renamed or moved since?"
        )
        return error

    def check_unmatched(
        self, expected: Expected, moved: Mapping[str, MovedPartition] | None = None
    ) -> None:
        """Refuse snapshots that no step or partition of the flow would restore.

        They come from a step or partition renamed (or removed) since: a
        resume would restore the rest without them, for instance keyed
        counts on top of an input read again from its start. Those of the
        steps that ``RecoveryConfig.discard_unmatched`` names (or of all,
        with ``True``) are dropped instead, deleted by the first commit of
        this run; unless others are refused, then nothing is dropped.

        Args:
            expected: For each step id of the flow, the partition names it
                can hold snapshots of (a source's or a partitioned sink's
                ``list_parts()``; empty for a step that keeps none), or
                `ANY_KEY` (a keyed step).
            moved: For the steps whose source can tell, by step id, where a
                partition that no longer matches went (see `_follow_moves`).

        Raises:
            UnmatchedSnapshotsError: Some snapshots match nothing; the
                message lists them.
            Exception: A snapshot the serde cannot load (a state class
                renamed since, a damaged row): the serde's error, with a
                note naming the step, the key and the partition file.
        """
        moved = moved or {}
        unmatched: dict[str, list[str]] = {}
        for step_id, all_keys in self._keys.items():
            names = expected.get(step_id, frozenset())
            if names is ANY_KEY:
                continue
            assert not isinstance(names, AnyKey)
            if step_id in moved:
                self._follow_moves(step_id, names, moved[step_id])
            keys = sorted(key for key in all_keys if key not in names)
            if keys:
                unmatched[step_id] = keys
        refused = {s: keys for s, keys in unmatched.items() if not self.config.discards(s)}
        if refused:
            raise UnmatchedSnapshotsError(self._unmatched_message(refused, expected))
        for step_id, keys in unmatched.items():
            self._drop(step_id, keys)
        if self._unloadable:
            first, *more = self._unloadable.values()
            if more:
                first.add_note(f"({len(more)} more snapshot{'s' * (len(more) > 1)} failed to load)")
            raise first

    def check_kinds(self, kinds: Mapping[str, str]) -> None:
        """Refuse snapshots of a step whose kind changed since they were taken.

        A ``stateful_map`` turned into a ``batch`` (or a window step) under
        the same id would be handed the other kind's states: an error in
        the middle of the run, or a mapper given the batch's own tuple as
        its state. Called before any operator is built (they take their
        states when they are). Snapshots of the steps that
        ``RecoveryConfig.discard_unmatched`` names are dropped instead. The
        kinds are recorded by this run's first commit (in cluster mode, in
        every commit marker); where none were recorded (by an earlier
        release), nothing is compared.

        Args:
            kinds: The kind of each step of the flow, by step id.

        Raises:
            UnmatchedSnapshotsError: Names each such step and both kinds.
        """
        recorded = getattr(self.store, "step_kinds", None)
        if recorded is None:
            return
        then = recorded()
        changed = {
            step_id: (then[step_id], kinds[step_id])
            for step_id in self._keys
            if step_id in then and step_id in kinds and then[step_id] != kinds[step_id]
        }
        refused = {s: pair for s, pair in changed.items() if not self.config.discards(s)}
        if refused:
            lines = [
                f"  step {step_id!r}: {len(self._keys[step_id])} snapshot(s) of a {was} step, "
                f"which is a {now} step now"
                for step_id, (was, now) in sorted(refused.items())
            ]
            if isinstance(self.store, Store):
                holder = f"recovery directory {self.store.db_dir} holds"
                drop = (
                    "; to drop these snapshots on purpose, run once with "
                    "RecoveryConfig(..., discard_unmatched=True) (or a set of step ids)"
                )
            else:  # cluster mode: no option drops a step's changelog
                holder, drop = f"{self.store.db_dir} hold", ""
            msg = "\n".join(
                [
                    f"{holder} snapshots of steps whose kind changed since, under the same id:",
                    *lines,
                    "A step of another kind cannot take them. Give the new step a new id, or "
                    f"put the old step back{drop}.",
                ]
            )
            raise UnmatchedSnapshotsError(msg)
        for step_id in changed:
            self._drop(step_id, sorted(self._keys[step_id]))
        self._kinds_to_record = dict(kinds)

    def _drop(self, step_id: str, keys: list[str]) -> None:
        """Forget these snapshots of ``step_id``; this run's first commit deletes them."""
        deleted = self._pending.setdefault(self.resume_epoch, {})
        for key in keys:
            self._keys[step_id].discard(key)
            self._states.get(step_id, {}).pop(key, None)
            self._unloadable.pop((step_id, key), None)
            deleted[(step_id, key)] = None

    def _follow_moves(self, step_id: str, names: Set[str], moved: MovedPartition) -> None:
        """Move the snapshots of partitions whose source says they were renamed.

        ``moved(saved, names)`` names the partition a snapshot of ``saved``
        belongs to now (a file source whose fs id changed, say), or None.
        The snapshot moves there, and the old row is deleted by the first
        commit.
        """
        keys = self._keys.get(step_id, set())
        for key in [key for key in keys if key not in names]:
            new = moved(key, names)
            if new is None or new not in names or new in keys:
                continue
            keys.discard(key)
            keys.add(new)
            states = self._states.get(step_id, {})
            if key in states:
                states[new] = states.pop(key)
            if (step_id, key) in self._unloadable:
                self._unloadable[(step_id, new)] = self._unloadable.pop((step_id, key))
            self._pending.setdefault(self.resume_epoch, {})[(step_id, key)] = None

    def _unmatched_message(self, refused: dict[str, list[str]], expected: Expected) -> str:
        lines = [
            f"  {_describe_unmatched(step_id, keys, expected.get(step_id))}"
            for step_id, keys in sorted(refused.items())
        ]
        msg = "\n".join(
            [
                f"recovery directory {self.store.db_dir} holds snapshots that match no step "
                "or partition of this flow:",
                *lines,
                "Resuming would ignore them while restoring the rest (keyed state on top of "
                "an input read again from its start, an output file truncated). If a step "
                "or partition was renamed (a file path spelled differently, say), rename it "
                "back; to drop these snapshots on purpose, run once with "
                "RecoveryConfig(..., discard_unmatched=True) (or a set of step ids).",
            ]
        )
        return msg

    # -- snapshotting --------------------------------------------------------

    def record(self, epoch: int, step_id: str, changes: Mapping[str, Any]) -> None:
        """Take the snapshots of one step for ``epoch`` (serialised now).

        Raises:
            StepFailed: The serde failed on a state (one holding a lock or a
                generator, say); the error names the step and the key.
        """
        if not changes:
            return
        pending = self._pending.setdefault(epoch, {})
        for key, state in changes.items():
            if state is DELETED:
                pending[(step_id, key)] = None
            elif type(state) is Frozen:
                pending[(step_id, key)] = state.data
            else:
                pending[(step_id, key)] = self._ser(step_id, key, state)

    def freeze(self, step_id: str, key: str, state: Any) -> Frozen:
        """Serialise a snapshot now, for a `record` later.

        A snapshot taken some time before it is recorded (an async source's
        position before a read) is frozen when taken: the partition may
        change the object it returned in the meantime.

        Raises:
            StepFailed: The serde failed on the state; the error names the
                step and the key.
        """
        return Frozen(self._ser(step_id, key, state))

    def _ser(self, step_id: str, key: str, state: Any) -> bytes:
        """``serde.ser(state)``, naming the step and the key if it fails."""
        try:
            data = self.serde.ser(state)
            if not isinstance(data, bytes | bytearray | memoryview):
                # None would be stored as NULL, which reads as "no state":
                # the key's state would be dropped without a word.
                msg = f"{type(self.serde).__name__}.ser returned {type(data).__name__}, not bytes"
                raise TypeError(msg)
            return bytes(data)
        except Exception as error:
            error.add_note(
                f"while serialising the snapshot of key {key!r} of step {step_id!r} for "
                f"recovery with {type(self.serde).__name__} (a source's or a sink's key is "
                "its partition); state kept under recovery must be serialisable"
            )
            raise fail(error, step_id, "recovery snapshot serde") from None

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
        started = perf_counter()
        try:
            with span("aiowax.snapshot", epoch=epoch, changes=len(changes)):
                await run_in_thread(self.store.commit, epoch, changes, self.worker_count, keep_from)
                if self._kinds_to_record:
                    record = self.store.record_kinds  # type: ignore[attr-defined]
                    await run_in_thread(record, self._kinds_to_record)
                    self._kinds_to_record = {}
        finally:
            # Forget changes only once they are committed: a commit that is
            # cancelled before its thread ran must not lose them.
            for e in [e for e in self._pending if e <= self.store.committed]:
                del self._pending[e]
            if self._room is not None:
                self._room.set()
                self._room = None
        self.commits += 1
        self.last_commit_s = perf_counter() - started
        self.last_commit_at = datetime.now(UTC)

    def close(self) -> None:
        """Close the partition files and give up the directory's lock."""
        self.store.close()


def _describe_unmatched(step_id: str, keys: list[str], names: Set[str] | AnyKey | None) -> str:
    """One line of an `UnmatchedSnapshotsError`: a step and its unmatched keys."""
    shown = ", ".join(repr(key) for key in keys[:_LISTED_KEYS])
    if len(keys) > _LISTED_KEYS:
        shown += f" and {len(keys) - _LISTED_KEYS} more"
    what = f"{len(keys)} snapshot{'s' if len(keys) != 1 else ''} ({shown})"
    if names is None:
        return f"step {step_id!r}: {what}; the flow has no step {step_id!r}"
    if isinstance(names, AnyKey) or not names:
        return f"step {step_id!r}: {what}; the step keeps no snapshots now"
    listed = ", ".join(repr(name) for name in sorted(names)[:_LISTED_KEYS])
    if len(names) > _LISTED_KEYS:
        listed += f" and {len(names) - _LISTED_KEYS} more"
    return f"step {step_id!r}: {what} of partitions it no longer lists (it lists {listed})"
