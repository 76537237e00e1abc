"""The `Dataflow` builder: a list of validated steps, nothing more.

Building a flow starts no event loop and no task; the engine compiles the
steps into tasks only when the flow runs. Every argument is checked here,
when the method is called, so mistakes point at the line that made them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import timedelta
from typing import Any

from aiowax._checks import (
    callable_arg,
    describe,
    positive_int,
    timedelta_arg,
    unpicklable_function,
    utf8_text,
)
from aiowax._compat.calls import accepts_0172_calls
from aiowax._compat.inputs import Input as Input0172
from aiowax._compat.warn import deprecated_0172
from aiowax._definition.inputs import Source
from aiowax._definition.outputs import Sink
from aiowax._definition.step_ids import step_id_checked
from aiowax._definition.steps import (
    BatchStep,
    CollectWindowStep,
    FilterMapStep,
    FilterStep,
    FlatMapStep,
    FoldWindowStep,
    InputStep,
    InspectEpochStep,
    InspectStep,
    InspectWorkerStep,
    MapStep,
    OutputStep,
    PoolableStep,
    RedistributeStep,
    ReduceStep,
    ReduceWindowStep,
    StatefulMapStep,
    Step,
)
from aiowax._definition.window import ClockConfig, WindowConfig
from aiowax._util import is_async_callable, is_asyncgen_callable

#: Marks the operators of the reference that take no step id.
_NO_ID: Any = object()


class _DerivedId(str):
    """A step id the flow made up for a Bytewax 0.17.2 call without one.

    Like the ids of ``inspect`` steps, it reserves nothing: a later step may
    still be given the same text as its own id.
    """

    __slots__ = ()


class Dataflow:
    """A dataflow definition: call its methods to add steps, then run it.

    Each `input` starts a pipeline; the steps added after it process that
    input's items, in order, until the next `input`. Items of a pipeline may
    go through any number of `output` steps, which write them and pass them on.

    >>> from aiowax.dataflow import Dataflow
    >>> from aiowax.testing import TestingSource, TestingSink, run_main
    >>> flow = Dataflow()
    >>> flow.input("numbers", TestingSource([1, 2, 3]))
    >>> flow.map("square", lambda x: x * x)
    >>> seen = []
    >>> flow.output("collect", TestingSink(seen))
    >>> run_main(flow)
    >>> seen
    [1, 4, 9]

    Every step that calls user code takes a keyword ``max_concurrency``:
    how many calls of its ``async def`` functions (or of functions that
    return awaitables) may be in flight at once within a batch, 128 by
    default; e.g. 10 to hold a database to 10 queries at a time. A keyed
    step still calls a key's functions one after the other. Outputs keep
    the order of the items whatever the limit.

    ``map``, ``filter``, ``filter_map`` and ``flat_map`` also take a keyword
    ``processes``: run their plain (not ``async def``) function in that many
    worker processes, which the step starts when the run starts and stops
    when it ends. Each batch is cut into at most ``processes`` chunks, sent
    to the processes at once; the outputs keep the order of the items. The
    function, the items and its results must be picklable: a module-level
    function, and values of module-level classes. It pays for CPU-bound
    pure-Python functions only (see ``docs/parallel.md``); for I/O, write
    an ``async def`` function instead.

    Bytewax 0.17.2 code runs too (see ``docs/migration.md``): ``map``,
    ``filter``, ``filter_map`` and ``flat_map`` called without a step id,
    ``input=``/``output=`` by keyword and a step id used twice are accepted
    with a `DeprecationWarning`, and the window steps of a pipeline that
    reads a 0.17.2 input class (``TestingInput``, ``FileInput``...) emit
    0.17.2's ``(key, value)``, without the window's metadata.
    """

    def __init__(self, name: str | None = None) -> None:
        """Start an empty flow.

        Args:
            name: What the flow is called in its stats, metrics and live
                page, so that several flows of one process are told apart;
                ``"flow"`` when not given.

        Raises:
            TypeError: ``name`` is not a string.
            ValueError: ``name`` is empty, or not valid Unicode text (a
                lone surrogate).
        """
        self._name: str | None = None
        self.name = name
        self._steps: list[Step] = []
        self._ids: set[str] = set()

    @property
    def name(self) -> str | None:
        """The flow's name (None: not named; stats call it ``"flow"``).

        Checked when set, as in the constructor: a name set later goes into
        the same stats, metrics labels and live page.
        """
        return self._name

    @name.setter
    def name(self, name: str | None) -> None:
        if name is not None:
            if not isinstance(name, str):
                msg = f"Dataflow: name must be a str, got {type(name).__name__}"
                raise TypeError(msg)
            if not name.strip():
                msg = "Dataflow: name must not be empty"
                raise ValueError(msg)
            utf8_text("Dataflow", "name", name)
        self._name = name

    @property
    def steps(self) -> tuple[Step, ...]:
        """The steps declared so far, in order."""
        return tuple(self._steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(tuple(self._steps))

    def __len__(self) -> int:
        return len(self._steps)

    def __repr__(self) -> str:
        ids = ", ".join(s.step_id for s in self._steps)
        return f"<Dataflow of {len(self._steps)} steps: {ids}>"

    def _with_fields(self, replaced: Mapping[str, Mapping[str, Any]]) -> Dataflow:
        """A copy of this flow with some steps' fields replaced, by step id."""
        copy = Dataflow(self.name)
        copy._ids = set(self._ids)
        copy._steps = [
            replace(s, **replaced[s.step_id]) if s.step_id in replaced else s for s in self._steps
        ]
        return copy

    def _add(self, cls: type[Step], step_id: object, **fields: Any) -> None:
        kind = cls.kind
        index = len(self._steps)
        if step_id is _NO_ID:
            # Reference operators without a step id still need a name in
            # errors. A generated id reserves nothing (a later step may take
            # the same text), and avoids every id users took before it.
            step_id = self._generated_id(f"{kind}#{index}")
        elif isinstance(step_id, _DerivedId):
            step_id = str(step_id)  # made by _derived_step_id: unique, reserves nothing
        else:
            if not isinstance(step_id, str):
                msg = f"{kind}: step_id must be a str, got {step_id!r}"
                raise TypeError(msg)
            if not step_id:
                msg = f"{kind}: step_id must not be empty"
                raise ValueError(msg)
            utf8_text(kind, "step_id", step_id)
            if step_id in self._ids:
                step_id = self._renamed_0172_repeat(cls, step_id, fields)
            else:
                self._ids.add(step_id)
        assert isinstance(step_id, str)
        if fields.get("max_concurrency") is not None:
            positive_int(self._where(kind, step_id), "max_concurrency", fields["max_concurrency"])
        self._steps.append(cls(step_id=step_id, index=index, **fields))

    def _generated_id(self, base: str) -> str:
        """``base``, primed until no user id of this flow is the same text."""
        while base in self._ids:
            base += "'"
        return base

    def _derived_step_id(self, kind: str, name: str | None) -> _DerivedId:
        """The id of a step that Bytewax 0.17.2 code added without an id of its own.

        ``map#3:add_one``: the kind and position of the step in the flow,
        and a name (its function's, or the id it repeats) when there is one,
        so the same flow code gives the same id on every run and in every
        process, and recovery finds what an earlier run saved under it.
        """
        base = f"{kind}#{len(self._steps)}"
        if name:
            base += f":{name}"
        return _DerivedId(self._generated_id(base))

    def _renamed_0172_repeat(self, cls: type[Step], step_id: str, fields: Mapping[str, Any]) -> str:
        """The id of a step whose id an earlier step of the flow already has.

        The method API refuses that: recovery stores a step's state under its
        id, and two steps under one id would mix theirs. Bytewax 0.17.2
        allowed it (its own subflow.py and batch_operator.py examples reuse
        an id), so in a pipeline that reads a 0.17.2 input the step gets an
        id derived from its position instead, with a warning.

        Raises:
            ValueError: The pipeline is not a 0.17.2 one.
        """
        kind = cls.kind
        if cls is InputStep:
            in_0172 = isinstance(fields.get("source"), Input0172)
        else:
            in_0172 = self._reads_0172_input()
        if not in_0172:
            msg = f"{kind}: step_id {step_id!r} is already used by another step of this flow"
            raise ValueError(msg)
        derived = self._derived_step_id(kind, step_id)
        deprecated_0172(
            f"{kind}: step_id {step_id!r} is already used by another step of this flow; "
            f"Bytewax 0.17 allowed that, aiowax gives this step the id {str(derived)!r} "
            "so that recovery keeps the two steps' state apart. Give it an id of its own."
        )
        return str(derived)

    def _reads_0172_input(self) -> bool:
        """The pipeline being defined starts with a Bytewax 0.17.2 input class.

        Its window steps then emit 0.17.2's ``(key, value)``, without the
        window's metadata, so that 0.17.2 code runs unchanged.
        """
        for step in reversed(self._steps):
            if isinstance(step, InputStep):
                return isinstance(step.source, Input0172)
        return False

    def _add_poolable(
        self,
        cls: type[PoolableStep],
        step_id: object,
        name: str,
        fn: Callable[..., Any],
        max_concurrency: int | None,
        processes: int | None,
    ) -> None:
        """Check and add a step whose one-item function ``name`` may run in processes."""
        callable_arg(self._where(cls.kind, step_id), name, fn)
        self._check_processes(cls.kind, step_id, name, fn, processes)
        fields = {name: fn, "max_concurrency": max_concurrency, "processes": processes}
        self._add(cls, step_id, **fields)

    def _check_processes(
        self, kind: str, step_id: object, name: str, fn: Callable[..., Any], processes: object
    ) -> None:
        """Refuse a bad ``processes=`` now, before the step is added.

        Whether ``fn`` pickles is known for sure only when it is pickled, at
        the start of the run (a callable object may hold anything); a lambda
        or a function defined inside another never does, and that is cheap
        to see here, where the traceback points at the line to change.
        """
        if processes is None:
            return
        where = self._where(kind, step_id)
        positive_int(where, "processes", processes)
        if is_async_callable(fn) or is_asyncgen_callable(fn):
            msg = (
                f"{where}: processes= runs the {name} in worker processes, where a "
                f"coroutine cannot be awaited (nor sent back), but {describe(fn)} is "
                "async; make it a plain def, or drop processes= and keep it async "
                "(async functions already run concurrently, in the event loop)"
            )
            raise TypeError(msg)
        why = unpicklable_function(fn)
        if why is not None:
            msg = (
                f"{where}: processes= sends the {name} to worker processes by "
                f"pickling it, and {why} cannot be pickled; define it with def at "
                "the top level of a module"
            )
            raise TypeError(msg)

    @staticmethod
    def _where(kind: str, step_id: object) -> str:
        return f"{kind} step {step_id!r}"

    # -- stateless ---------------------------------------------------------

    @accepts_0172_calls
    @step_id_checked
    def input(self, /, step_id: str, source: Source) -> None:
        """Start a pipeline that reads from ``source``.

        Args:
            step_id: Unique id of the step; recovery stores positions under it.
            source: A `aiowax.inputs.FixedPartitionedSource` or
                `aiowax.inputs.DynamicSource`.
        """
        if not isinstance(source, Source):
            msg = (
                f"{self._where('input', step_id)}: source must be an "
                f"aiowax.inputs.Source, got {source!r}"
            )
            raise TypeError(msg)
        self._add(InputStep, step_id, source=source)

    @accepts_0172_calls
    @step_id_checked
    def output(self, /, step_id: str, sink: Sink) -> None:
        """Write every item to ``sink``, then pass it on unchanged.

        Args:
            step_id: Unique id of the step.
            sink: A `aiowax.outputs.FixedPartitionedSink` or
                `aiowax.outputs.DynamicSink`.
        """
        if not isinstance(sink, Sink):
            msg = (
                f"{self._where('output', step_id)}: sink must be an "
                f"aiowax.outputs.Sink, got {sink!r}"
            )
            raise TypeError(msg)
        self._add(OutputStep, step_id, sink=sink)

    @accepts_0172_calls
    @step_id_checked
    def map(
        self,
        /,
        step_id: str,
        mapper: Callable[[Any], Any],
        *,
        max_concurrency: int | None = None,
        processes: int | None = None,
    ) -> None:
        """Replace each item by ``mapper(item)``.

        Args:
            step_id: Unique id of the step.
            mapper: Plain or ``async def`` function of one item.
            max_concurrency: Most async calls in flight at once; see `Dataflow`.
            processes: Worker processes to run a plain ``mapper`` in; see `Dataflow`.
        """
        self._add_poolable(MapStep, step_id, "mapper", mapper, max_concurrency, processes)

    @accepts_0172_calls
    @step_id_checked
    def filter(
        self,
        /,
        step_id: str,
        predicate: Callable[[Any], Any],
        *,
        max_concurrency: int | None = None,
        processes: int | None = None,
    ) -> None:
        """Keep the items for which ``predicate(item)`` is ``True``.

        The predicate must return a `bool`; anything else stops the flow with
        a `TypeError`, since a truthy ``None`` check is a classic silent bug.

        Args:
            step_id: Unique id of the step.
            predicate: Plain or ``async def`` function of one item.
            max_concurrency: Most async calls in flight at once; see `Dataflow`.
            processes: Worker processes to run a plain ``predicate`` in; see `Dataflow`.
        """
        self._add_poolable(FilterStep, step_id, "predicate", predicate, max_concurrency, processes)

    @accepts_0172_calls
    @step_id_checked
    def filter_map(
        self,
        /,
        step_id: str,
        mapper: Callable[[Any], Any],
        *,
        max_concurrency: int | None = None,
        processes: int | None = None,
    ) -> None:
        """Replace each item by ``mapper(item)``, dropping ``None`` results.

        Args:
            step_id: Unique id of the step.
            mapper: Plain or ``async def`` function of one item.
            max_concurrency: Most async calls in flight at once; see `Dataflow`.
            processes: Worker processes to run a plain ``mapper`` in; see `Dataflow`.
        """
        self._add_poolable(FilterMapStep, step_id, "mapper", mapper, max_concurrency, processes)

    @accepts_0172_calls
    @step_id_checked
    def flat_map(
        self,
        /,
        step_id: str,
        mapper: Callable[[Any], Any],
        *,
        max_concurrency: int | None = None,
        processes: int | None = None,
    ) -> None:
        """Replace each item by every element of the iterable ``mapper(item)``.

        Args:
            step_id: Unique id of the step.
            mapper: Plain or ``async def`` function returning an iterable, or
                an async generator function.
            max_concurrency: Most async calls in flight at once; see `Dataflow`.
            processes: Worker processes to run a plain ``mapper`` in; see `Dataflow`.
        """
        self._add_poolable(FlatMapStep, step_id, "mapper", mapper, max_concurrency, processes)

    @step_id_checked
    def inspect(
        self, /, inspector: Callable[[Any], Any], *, max_concurrency: int | None = None
    ) -> None:
        """Call ``inspector(item)`` on each item and pass the item on.

        Args:
            inspector: Plain or ``async def`` function; its result is ignored.
            max_concurrency: Most async calls in flight at once; see `Dataflow`.
        """
        callable_arg("inspect", "inspector", inspector)
        self._add(InspectStep, _NO_ID, inspector=inspector, max_concurrency=max_concurrency)

    @step_id_checked
    def inspect_epoch(
        self, /, inspector: Callable[[int, Any], Any], *, max_concurrency: int | None = None
    ) -> None:
        """Call ``inspector(epoch, item)`` on each item and pass the item on.

        Args:
            inspector: Plain or ``async def`` function; its result is ignored.
            max_concurrency: Most async calls in flight at once; see `Dataflow`.
        """
        callable_arg("inspect_epoch", "inspector", inspector)
        self._add(InspectEpochStep, _NO_ID, inspector=inspector, max_concurrency=max_concurrency)

    @step_id_checked
    def inspect_worker(
        self, /, inspector: Callable[[Any, int], Any], *, max_concurrency: int | None = None
    ) -> None:
        """Call ``inspector(item, worker_index)`` on each item, pass it on.

        In a pipeline that reads a Bytewax 0.17.2 input (`aiowax.inputs.PartitionedInput`,
        ``TestingInput``...), ``inspector(worker_index, item)``, as 0.17.2 calls it.

        Args:
            inspector: Plain or ``async def`` function; its result is ignored.
            max_concurrency: Most async calls in flight at once; see `Dataflow`.
        """
        callable_arg("inspect_worker", "inspector", inspector)
        if self._reads_0172_input():
            inspector = _worker_first(inspector)
        self._add(InspectWorkerStep, _NO_ID, inspector=inspector, max_concurrency=max_concurrency)

    @step_id_checked
    def redistribute(self, /) -> None:
        """Spread the items evenly over all workers for the steps that follow."""
        self._add(RedistributeStep, _NO_ID)

    # -- stateful ----------------------------------------------------------

    @step_id_checked
    def stateful_map(
        self,
        /,
        step_id: str,
        builder: Callable[[], Any],
        mapper: Callable[[Any, Any], Any],
        *,
        max_concurrency: int | None = None,
    ) -> None:
        """Map ``(key, value)`` items through a per-key state.

        Args:
            step_id: Unique id of the step; recovery stores state under it.
            builder: ``builder()`` makes the state of a new key.
            mapper: ``mapper(state, value) -> (new_state, out)``; the step
                emits ``(key, out)``, and a ``None`` new state forgets the key.
            max_concurrency: Most async calls in flight at once; see `Dataflow`.
        """
        where = self._where("stateful_map", step_id)
        callable_arg(where, "builder", builder)
        callable_arg(where, "mapper", mapper)
        self._add(
            StatefulMapStep,
            step_id,
            builder=builder,
            mapper=mapper,
            max_concurrency=max_concurrency,
        )

    @step_id_checked
    def reduce(
        self,
        /,
        step_id: str,
        reducer: Callable[[Any, Any], Any],
        is_complete: Callable[[Any], Any],
        *,
        max_concurrency: int | None = None,
    ) -> None:
        """Combine the values of each key until ``is_complete`` says so.

        Args:
            step_id: Unique id of the step.
            reducer: ``reducer(acc, value) -> acc``; the first value of a key
                starts its accumulator.
            is_complete: ``is_complete(acc) -> bool``; ``True`` emits
                ``(key, acc)`` and forgets the key.
            max_concurrency: Most async calls in flight at once; see `Dataflow`.
        """
        where = self._where("reduce", step_id)
        callable_arg(where, "reducer", reducer)
        callable_arg(where, "is_complete", is_complete)
        self._add(
            ReduceStep,
            step_id,
            reducer=reducer,
            is_complete=is_complete,
            max_concurrency=max_concurrency,
        )

    @step_id_checked
    def batch(self, /, step_id: str, max_size: int, timeout: timedelta) -> None:
        """Gather the values of each key into lists.

        A key's list is emitted as ``(key, list)`` once it holds ``max_size``
        values, once ``timeout`` has passed since its first value, or at the
        end of input.

        Args:
            step_id: Unique id of the step.
            max_size: Largest list to emit; a positive int.
            timeout: Longest a value waits; a non-negative timedelta.
        """
        where = self._where("batch", step_id)
        positive_int(where, "max_size", max_size)
        timedelta_arg(where, "timeout", timeout, allow_zero=True)
        self._add(BatchStep, step_id, max_size=max_size, timeout=timeout)

    def _check_windowing(self, kind: str, step_id: str, clock: object, window: object) -> str:
        where = self._where(kind, step_id)
        if not isinstance(clock, ClockConfig):
            msg = f"{where}: clock_config must be an aiowax.window.ClockConfig, got {clock!r}"
            raise TypeError(msg)
        if not isinstance(window, WindowConfig):
            msg = f"{where}: window_config must be an aiowax.window.WindowConfig, got {window!r}"
            raise TypeError(msg)
        return where

    @step_id_checked
    def fold_window(
        self,
        /,
        step_id: str,
        clock_config: ClockConfig,
        window_config: WindowConfig,
        builder: Callable[[], Any],
        folder: Callable[[Any, Any], Any],
        *,
        max_concurrency: int | None = None,
    ) -> None:
        """Fold the values of each key and window into an accumulator.

        Emits ``(key, (WindowMetadata, acc))`` when the window closes
        (``(key, acc)`` after a Bytewax 0.17.2 input; see `Dataflow`).

        Args:
            step_id: Unique id of the step.
            clock_config: How item times and the watermark are found.
            window_config: Which windows an item falls in.
            builder: ``builder()`` makes the empty accumulator of a window.
            folder: ``folder(acc, value) -> acc``.
            max_concurrency: Most async calls in flight at once; see `Dataflow`.
        """
        where = self._check_windowing("fold_window", step_id, clock_config, window_config)
        callable_arg(where, "builder", builder)
        callable_arg(where, "folder", folder)
        self._add(
            FoldWindowStep,
            step_id,
            clock_config=clock_config,
            window_config=window_config,
            emit_metadata=not self._reads_0172_input(),
            builder=builder,
            folder=folder,
            max_concurrency=max_concurrency,
        )

    @step_id_checked
    def reduce_window(
        self,
        /,
        step_id: str,
        clock_config: ClockConfig,
        window_config: WindowConfig,
        reducer: Callable[[Any, Any], Any],
        *,
        max_concurrency: int | None = None,
    ) -> None:
        """Combine the values of each key and window with ``reducer``.

        Emits ``(key, (WindowMetadata, acc))`` when the window closes
        (``(key, acc)`` after a Bytewax 0.17.2 input; see `Dataflow`).

        Args:
            step_id: Unique id of the step.
            clock_config: How item times and the watermark are found.
            window_config: Which windows an item falls in.
            reducer: ``reducer(acc, value) -> acc``.
            max_concurrency: Most async calls in flight at once; see `Dataflow`.
        """
        where = self._check_windowing("reduce_window", step_id, clock_config, window_config)
        callable_arg(where, "reducer", reducer)
        self._add(
            ReduceWindowStep,
            step_id,
            clock_config=clock_config,
            window_config=window_config,
            emit_metadata=not self._reads_0172_input(),
            reducer=reducer,
            max_concurrency=max_concurrency,
        )

    @step_id_checked
    def collect_window(
        self,
        /,
        step_id: str,
        clock_config: ClockConfig,
        window_config: WindowConfig,
        *,
        max_concurrency: int | None = None,
    ) -> None:
        """Collect the values of each key and window into a time-sorted list.

        Emits ``(key, (WindowMetadata, list))`` when the window closes
        (``(key, list)`` after a Bytewax 0.17.2 input; see `Dataflow`).

        Args:
            step_id: Unique id of the step.
            clock_config: How item times and the watermark are found.
            window_config: Which windows an item falls in.
            max_concurrency: Most async calls in flight at once; see `Dataflow`.
        """
        self._check_windowing("collect_window", step_id, clock_config, window_config)
        self._add(
            CollectWindowStep,
            step_id,
            clock_config=clock_config,
            window_config=window_config,
            emit_metadata=not self._reads_0172_input(),
            max_concurrency=max_concurrency,
        )


def _worker_first(inspector: Callable[[int, Any], Any]) -> Callable[[Any, int], Any]:
    """``inspector`` of 0.17.2 code, called as the method API calls its inspectors."""

    def worker_first(item: Any, worker_index: int) -> Any:
        return inspector(worker_index, item)

    # The step shows (visualize, stats) the user's function, not this one.
    worker_first.__name__ = getattr(inspector, "__name__", "inspector")
    worker_first.__qualname__ = getattr(inspector, "__qualname__", worker_first.__name__)
    return worker_first
