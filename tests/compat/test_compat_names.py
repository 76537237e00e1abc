"""Bytewax 0.17.2's names, where 0.17.2 had them, with 0.17.2's signatures.

The signatures below were printed by the released wheel:

    /tmp/bw017/bin/python -c 'import inspect, bytewax.connectors.files as m;
        print(inspect.signature(m.FileInput))'

and likewise for each name (``pip install bytewax==0.17.2`` in /tmp/bw017).
Only the parameter names, kinds and defaults are compared: the annotations
are aiowax's.
"""

from __future__ import annotations

import importlib
import inspect
from datetime import UTC, datetime, timedelta
from typing import Any
from zlib import adler32

import pytest

from aiowax.connectors.files import CSVSource, DirSink, DirSource, FileSink, FileSource
from aiowax.connectors.stdio import StdOutSink
from aiowax.inputs import (
    DynamicInput,
    DynamicSource,
    FixedPartitionedSource,
    Input,
    PartitionedInput,
    SimplePollingSource,
    Source,
    StatefulSource,
    StatefulSourcePartition,
    StatelessSource,
    StatelessSourcePartition,
)
from aiowax.outputs import (
    DynamicOutput,
    DynamicSink,
    FixedPartitionedSink,
    Output,
    PartitionedOutput,
    Sink,
    StatefulSink,
    StatefulSinkPartition,
    StatelessSink,
    StatelessSinkPartition,
)
from aiowax.testing import TestingInput, TestingOutput, TestingSink, TestingSource, poll_next_batch

E = inspect.Parameter.empty

#: 0.17.2's constructor parameters: (name, default), by module and name.
CONSTRUCTORS: dict[str, dict[str, tuple[tuple[str, object], ...]]] = {
    "aiowax.testing": {
        "TestingInput": (("ib", E), ("batch_size", 1)),
        "TestingOutput": (("ls", E),),
    },
    "aiowax.connectors.stdio": {"StdOutput": ()},
    "aiowax.connectors.files": {
        "FileInput": (("path", E), ("batch_size", 1000)),
        "DirInput": (("dir_path", E), ("glob_pat", "*"), ("batch_size", 1000)),
        "CSVInput": (("path", E), ("batch_size", 1000), ("fmtparams", E)),
        "FileOutput": (("path", E), ("end", "\n")),
        # file_namer and assign_file default to functions, compared below.
        "DirOutput": (
            ("dir_path", E),
            ("file_count", E),
            ("file_namer", ...),
            ("assign_file", ...),
            ("end", "\n"),
        ),
    },
    "aiowax.connectors.periodic": {
        "SimplePollingInput": (("interval", E), ("align_to", None)),
    },
}

#: 0.17.2's method parameters after ``self``, by class.
METHODS: dict[type, dict[str, tuple[str, ...]]] = {
    PartitionedInput: {"list_parts": (), "build_part": ("for_part", "resume_state")},
    DynamicInput: {"build": ("worker_index", "worker_count")},
    StatefulSource: {"next_batch": (), "next_awake": (), "snapshot": (), "close": ()},
    StatelessSource: {"next_batch": (), "next_awake": (), "close": ()},
    PartitionedOutput: {
        "list_parts": (),
        "part_fn": ("item_key",),
        "build_part": ("for_part", "resume_state"),
    },
    DynamicOutput: {"build": ("worker_index", "worker_count")},
    StatefulSink: {"write_batch": ("values",), "snapshot": (), "close": ()},
    StatelessSink: {"write_batch": ("items",), "close": ()},
}


def _params(obj: Any) -> tuple[tuple[str, object], ...]:
    return tuple((p.name, p.default) for p in inspect.signature(obj).parameters.values())


@pytest.mark.parametrize(
    ("module", "name"), [(m, n) for m, names in CONSTRUCTORS.items() for n in names]
)
def test_a_0172_name_is_where_0172_had_it_with_its_constructor(module: str, name: str) -> None:
    mod = importlib.import_module(module)
    cls = getattr(mod, name)
    assert name in mod.__all__
    assert cls.__module__ == module  # tracebacks and docs name the public home
    got = _params(cls)
    want = CONSTRUCTORS[module][name]
    assert [n for n, _ in got] == [n for n, _ in want]
    for (_, default), (_, expected) in zip(got, want, strict=True):
        if expected is not ...:
            assert default == expected


def test_dir_output_defaults_name_and_assign_files_as_0172() -> None:
    from aiowax.connectors.files import DirOutput

    params = inspect.signature(DirOutput).parameters
    assert params["file_namer"].default(3, 5) == "part_3"
    assert params["assign_file"].default("hello") == adler32(b"hello")


@pytest.mark.parametrize("cls", list(METHODS), ids=lambda c: c.__name__)
def test_the_0172_interfaces_have_0172_method_signatures(cls: type) -> None:
    for method, want in METHODS[cls].items():
        params = list(inspect.signature(getattr(cls, method)).parameters)
        assert tuple(params[1:]) == want, f"{cls.__name__}.{method}"


def test_the_0172_interfaces_are_the_method_apis() -> None:
    # So the engine runs them, and isinstance checks of either API hold.
    assert issubclass(Input, Source)
    assert issubclass(Output, Sink)
    assert issubclass(PartitionedInput, FixedPartitionedSource)
    assert issubclass(DynamicInput, DynamicSource)
    assert issubclass(StatefulSource, StatefulSourcePartition)
    assert issubclass(StatelessSource, StatelessSourcePartition)
    assert issubclass(PartitionedOutput, FixedPartitionedSink)
    assert issubclass(DynamicOutput, DynamicSink)
    assert issubclass(StatefulSink, StatefulSinkPartition)
    assert issubclass(StatelessSink, StatelessSinkPartition)


@pytest.mark.parametrize(
    ("module", "name", "old_base", "new_class"),
    [
        ("aiowax.testing", "TestingInput", PartitionedInput, TestingSource),
        ("aiowax.testing", "TestingOutput", DynamicOutput, TestingSink),
        ("aiowax.connectors.stdio", "StdOutput", DynamicOutput, StdOutSink),
        ("aiowax.connectors.files", "FileInput", PartitionedInput, FileSource),
        ("aiowax.connectors.files", "DirInput", PartitionedInput, DirSource),
        ("aiowax.connectors.files", "CSVInput", PartitionedInput, CSVSource),
        ("aiowax.connectors.files", "FileOutput", PartitionedOutput, FileSink),
        ("aiowax.connectors.files", "DirOutput", PartitionedOutput, DirSink),
        ("aiowax.connectors.periodic", "SimplePollingInput", PartitionedInput, SimplePollingSource),
    ],
)
def test_a_0172_connector_is_both_the_0172_kind_and_the_new_class(
    module: str, name: str, old_base: type, new_class: type
) -> None:
    cls = getattr(importlib.import_module(module), name)
    assert issubclass(cls, old_base)
    assert issubclass(cls, new_class)


def test_kafka_input_and_output_have_0172s_arguments_and_defaults() -> None:
    kafka = pytest.importorskip("aiowax.connectors.kafka")
    assert _params(kafka.KafkaInput) == (
        ("brokers", E),
        ("topics", E),
        ("tail", True),
        ("starting_offset", kafka.OFFSET_BEGINNING),
        ("add_config", None),
        # 0.17.2 read one message per batch unless told otherwise.
        ("batch_size", 1),
    )
    assert _params(kafka.KafkaOutput) == (("brokers", E), ("topic", E), ("add_config", None))
    assert issubclass(kafka.KafkaInput, PartitionedInput)
    assert issubclass(kafka.KafkaInput, kafka.KafkaSource)
    assert issubclass(kafka.KafkaOutput, DynamicOutput)
    assert issubclass(kafka.KafkaOutput, kafka.KafkaSink)
    # Built without a broker: the arguments are only checked here.
    inp = kafka.KafkaInput(["localhost:9092"], ["events"], tail=False, batch_size=5)
    assert inp._batch_size == 5
    assert inp._tail is False
    with pytest.raises(TypeError):
        kafka.KafkaInput("localhost:9092", ["events"])
    kafka.KafkaOutput(["localhost:9092"], "events", {"linger.ms": "5"})


# -- a 0.17.2 subclass, as the engine calls it and as its author calls it ------

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


class _Source(StatefulSource):
    def __init__(self, for_part: str, start: int) -> None:
        self.for_part = for_part
        self._n = start

    def next_batch(self) -> list[Any]:
        self._n += 1
        return [self._n]

    def snapshot(self) -> int:
        return self._n


class _Input(PartitionedInput):
    def list_parts(self) -> list[str]:
        return ["one"]

    def build_part(self, for_part: str, resume_state: int | None) -> _Source:
        return _Source(for_part, resume_state or 0)


def test_a_0172_build_part_takes_the_engines_call_and_its_authors() -> None:
    inp = _Input()
    from_engine = inp.build_part(NOW, "one", 4)  # type: ignore[call-arg]
    by_hand = inp.build_part("one", 4)
    assert from_engine.for_part == by_hand.for_part == "one"
    assert from_engine.next_batch() == by_hand.next_batch() == [5]
    assert inspect.signature(_Input.build_part).parameters.keys() == {
        "self",
        "for_part",
        "resume_state",
    }


def test_a_build_part_written_with_now_is_called_as_it_is() -> None:
    seen = []

    class NewStyle(PartitionedInput):
        def list_parts(self) -> list[str]:
            return ["one"]

        def build_part(  # type: ignore[override]
            self, now: datetime, for_part: str, resume_state: int | None
        ) -> _Source:
            seen.append(now)
            return _Source(for_part, 0)

    NewStyle().build_part(NOW, "one", None)  # type: ignore[call-arg]
    assert seen == [NOW]


def test_a_0172_dynamic_input_build_takes_the_engines_call() -> None:
    class Stateless(StatelessSource):
        def next_batch(self) -> list[Any]:
            raise StopIteration

    class Dyn(DynamicInput):
        def build(self, worker_index: int, worker_count: int) -> Stateless:
            assert (worker_index, worker_count) == (1, 3)
            return Stateless()

    assert isinstance(Dyn().build(NOW, 1, 3), Stateless)  # type: ignore[call-arg]
    assert isinstance(Dyn().build(1, 3), Stateless)


def test_a_0172_connector_gets_the_engines_now() -> None:
    # The polling input schedules its first call at the now the engine
    # passed (a virtual clock's in tests), not at the wall clock's.
    from aiowax.connectors.periodic import SimplePollingInput

    class Poll(SimplePollingInput):
        def next_item(self) -> int:
            return 1

    part = Poll(timedelta(seconds=1)).build_part(NOW, "singleton", None)  # type: ignore[call-arg]
    assert part.next_awake() == NOW


def test_simple_polling_input_refuses_0172s_short_intervals() -> None:
    from aiowax.connectors.periodic import SimplePollingInput

    class Poll(SimplePollingInput):
        def next_item(self) -> int:
            return 1

    with pytest.raises(ValueError, match="10 ms"):
        Poll(timedelta(milliseconds=9))


def test_0172_defaults_of_the_sink_interfaces() -> None:
    class Part(StatefulSink):
        def write_batch(self, values: list[Any]) -> None: ...

    class Out(PartitionedOutput):
        def list_parts(self) -> list[str]:
            return ["a", "b"]

        def build_part(self, for_part: str, resume_state: Any) -> Part:
            return Part()

    assert Part().snapshot() is None  # optional in 0.17.2
    assert Out().part_fn("key") == adler32(b"key")  # where 0.17.2 put the key


def test_poll_next_batch_takes_a_0172_partition() -> None:
    assert poll_next_batch(_Source("one", 0)) == [1]
    part = TestingInput([1, 2]).build_part("iterable", None)
    assert poll_next_batch(part) == [1]


def test_testing_output_appends_to_its_list() -> None:
    out: list[Any] = []
    part = TestingOutput(out).build(0, 1)
    part.write_batch([1, 2])
    assert out == [1, 2]


def test_a_source_or_sink_with_the_others_build_is_refused_when_defined() -> None:
    # A DynamicSource written with a sink's build (no `now`), or the mirror,
    # failed only when the flow ran, with Python's bare "takes 3 positional
    # arguments but 4 were given" (new-user helper session). Said when the
    # class is made, with the shape it needs and the 0.17.2-shaped class.
    with pytest.raises(TypeError, match=r"build\(worker_index, worker_count\) cannot take \(now, "):

        class Dyn(DynamicSource[Any]):
            def build(self, worker_index: int, worker_count: int) -> Any:  # type: ignore[override]
                return None

    with pytest.raises(TypeError, match=r"aiowax.inputs.PartitionedInput"):

        class Fixed(FixedPartitionedSource[Any, Any]):
            def list_parts(self) -> list[str]:
                return ["a"]

            def build_part(self, for_part: str, resume_state: Any) -> Any:  # type: ignore[override]
                return None

    with pytest.raises(TypeError, match=r"a sink's build takes no `now`"):

        class WrongSink(DynamicSink[Any]):
            def build(self, now: datetime, worker_index: int, worker_count: int) -> Any:  # type: ignore[override]
                return None

    # What may vary is left alone: defaults, *args, and the 0.17.2 classes.
    class WithDefault(DynamicSource[Any]):
        def build(self, now: datetime, worker_index: int, worker_count: int, x: int = 0) -> Any:
            return None

    class Varargs(DynamicSource[Any]):
        def build(self, *args: Any) -> Any:  # type: ignore[override]
            return None

    class Legacy(DynamicInput):
        def build(self, worker_index: int, worker_count: int) -> Any:
            return None


def test_batch_is_also_in_testing_as_in_0172() -> None:
    # 0.17.2's bytewax.testing imports batch from its inputs (outside its
    # __all__); migrated code importing it from there failed.
    import aiowax.inputs
    from aiowax.testing import batch

    assert batch is aiowax.inputs.batch
    assert list(batch(range(5), 2)) == [[0, 1], [2, 3], [4]]
