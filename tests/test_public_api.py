"""The public surface: ``__all__`` of every public module, and API.md's names.

What counts as public in a module ``M``: every name bound in ``M`` that does
not start with an underscore, except

- modules (``M``'s submodules, or modules it imported);
- ``__future__`` features (``annotations``) and typing helpers (TypeVars...);
- objects from outside aiowax (``timedelta``, ``Any``... imported for
  annotations);
- aiowax objects exported by another public module, which ``M`` imported for
  its own use (``Dataflow`` in ``aiowax.testing``);
- the few internal helpers listed in `INTERNAL_HELPERS`.

So a class, function or constant defined in ``M``, or re-exported by ``M``
from a private module, must be in ``M.__all__``: forgetting it there is what
this test catches.
"""

from __future__ import annotations

import importlib
import inspect
import json
import subprocess
import sys
import types
import typing
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

import pytest

import aiowax
import aiowax._run
import aiowax._util
from aiowax._connectors.files import _get_path_dev

PUBLIC_MODULES = (
    "aiowax",
    "aiowax.dataflow",
    "aiowax.inputs",
    "aiowax.outputs",
    "aiowax.window",
    "aiowax.testing",
    "aiowax.connectors",
    "aiowax.connectors.stdio",
    "aiowax.connectors.files",
    "aiowax.connectors.inproc",
    "aiowax.connectors.kafka",
    "aiowax.recovery",
    "aiowax.visualize",
    "aiowax.cluster",
    "aiowax.stats",
    "aiowax.prometheus",
    "aiowax.otel",
    "aiowax.asgi",
    "aiowax.connectors.periodic",
)

#: Public modules beyond the reference, which API.md does not list.
NOT_IN_API_MD = frozenset(
    {
        "aiowax.connectors",
        "aiowax.connectors.inproc",
        "aiowax.connectors.kafka",
        "aiowax.recovery",
        "aiowax.cluster",
        "aiowax.stats",
        "aiowax.prometheus",
        "aiowax.otel",
        "aiowax.asgi",
        "aiowax.connectors.periodic",
    }
)

#: Internal helpers that public modules import under a public-looking name;
#: identified by object, so that another object under the same name is not
#: excused.
INTERNAL_HELPERS: tuple[object, ...] = (
    aiowax._util.fixup_module_metadata,
    aiowax._run.run_sync,
)

#: The names API.md lists, per module (recovery and kafka are not
#: built yet). Dotted names are attributes of an exported class.
API_MD_NAMES: dict[str, tuple[str, ...]] = {
    "aiowax": ("run",),
    "aiowax.dataflow": ("Dataflow",),
    "aiowax.inputs": (
        "Source",
        "FixedPartitionedSource",
        "FixedPartitionedSource.list_parts",
        "FixedPartitionedSource.build_part",
        "StatefulSourcePartition",
        "StatefulSourcePartition.next_batch",
        "StatefulSourcePartition.next_awake",
        "StatefulSourcePartition.snapshot",
        "StatefulSourcePartition.close",
        "DynamicSource",
        "DynamicSource.build",
        "StatelessSourcePartition",
        "StatelessSourcePartition.next_batch",
        "StatelessSourcePartition.next_awake",
        "StatelessSourcePartition.close",
        "SimplePollingSource",
        "SimplePollingSource.next_item",
        "SimplePollingSource.Retry",
        "AbortExecution",
        "batch",
        "batch_async",
    ),
    "aiowax.outputs": (
        "Sink",
        "FixedPartitionedSink",
        "FixedPartitionedSink.list_parts",
        "FixedPartitionedSink.part_fn",
        "FixedPartitionedSink.build_part",
        "StatefulSinkPartition",
        "StatefulSinkPartition.write_batch",
        "StatefulSinkPartition.snapshot",
        "StatefulSinkPartition.close",
        "DynamicSink",
        "DynamicSink.build",
        "StatelessSinkPartition",
        "StatelessSinkPartition.write_batch",
        "StatelessSinkPartition.close",
    ),
    "aiowax.window": (
        "ClockConfig",
        "SystemClockConfig",
        "EventClockConfig",
        "WindowConfig",
        "TumblingWindow",
        "SlidingWindow",
        "SessionWindow",
        "WindowMetadata",
    ),
    "aiowax.testing": (
        "TestingSource",
        "TestingSource.EOF",
        "TestingSource.ABORT",
        "TestingSink",
        "run_main",
        "cluster_main",
        "ffwd_iter",
        "poll_next_batch",
    ),
    "aiowax.connectors.stdio": ("StdOutSink",),
    "aiowax.connectors.files": ("FileSource", "DirSource", "CSVSource", "FileSink", "DirSink"),
    "aiowax.visualize": ("to_json", "to_mermaid"),
}

_EMPTY = inspect.Parameter.empty
_KW = inspect.Parameter.KEYWORD_ONLY

#: Signatures API.md spells out: (name, default or _EMPTY, keyword-only?).
API_MD_SIGNATURES: dict[str, tuple[tuple[str, object, bool], ...]] = {
    "aiowax.run": (
        ("flow", _EMPTY, False),
        ("workers", 1, True),
        ("epoch_interval", None, True),
        ("recovery_config", None, True),
        # Issue 13 (scale-out) adds cluster mode after API.md's parameters,
        # issue 14 (observability) the stats callback.
        ("cluster", None, True),
        ("on_stats", None, True),
        ("stats_interval", 1.0, True),
    ),
    "aiowax.testing.run_main": (
        ("flow", _EMPTY, False),
        ("epoch_interval", None, True),
        ("recovery_config", None, True),
    ),
    "aiowax.testing.cluster_main": (
        ("flow", _EMPTY, False),
        ("addresses", _EMPTY, False),
        ("proc_id", _EMPTY, False),
        ("epoch_interval", None, True),
        ("recovery_config", None, True),
        ("worker_count_per_proc", 1, True),
    ),
    "aiowax.testing.TestingSource": (("ib", _EMPTY, False), ("batch_size", 1, False)),
    "aiowax.testing.ffwd_iter": (("it", _EMPTY, False), ("n", _EMPTY, False)),
    "aiowax.testing.poll_next_batch": (
        ("part", _EMPTY, False),
        ("timeout", timedelta(seconds=5), False),
    ),
    "aiowax.inputs.SimplePollingSource": (
        ("interval", _EMPTY, False),
        ("align_to", None, False),
    ),
    "aiowax.inputs.FixedPartitionedSource.build_part": (
        ("self", _EMPTY, False),
        ("now", _EMPTY, False),
        ("for_part", _EMPTY, False),
        ("resume_state", _EMPTY, False),
    ),
    "aiowax.inputs.StatefulSourcePartition.next_batch": (
        ("self", _EMPTY, False),
        ("sched", _EMPTY, False),
    ),
    "aiowax.inputs.DynamicSource.build": (
        ("self", _EMPTY, False),
        ("now", _EMPTY, False),
        ("worker_index", _EMPTY, False),
        ("worker_count", _EMPTY, False),
    ),
    "aiowax.inputs.StatelessSourcePartition.next_batch": (
        ("self", _EMPTY, False),
        ("sched", _EMPTY, False),
    ),
    "aiowax.outputs.FixedPartitionedSink.part_fn": (
        ("self", _EMPTY, False),
        ("item_key", _EMPTY, False),
    ),
    "aiowax.outputs.FixedPartitionedSink.build_part": (
        ("self", _EMPTY, False),
        ("for_part", _EMPTY, False),
        ("resume_state", _EMPTY, False),
    ),
    "aiowax.outputs.StatefulSinkPartition.write_batch": (
        ("self", _EMPTY, False),
        ("values", _EMPTY, False),
    ),
    "aiowax.outputs.DynamicSink.build": (
        ("self", _EMPTY, False),
        ("worker_index", _EMPTY, False),
        ("worker_count", _EMPTY, False),
    ),
    "aiowax.outputs.StatelessSinkPartition.write_batch": (
        ("self", _EMPTY, False),
        ("items", _EMPTY, False),
    ),
    "aiowax.window.EventClockConfig": (
        ("dt_getter", _EMPTY, False),
        ("wait_for_system_duration", timedelta(0), False),
        # Beyond the reference: the documented hook for late items.
        ("on_late", None, True),
    ),
    "aiowax.window.TumblingWindow": (("length", _EMPTY, False), ("align_to", _EMPTY, False)),
    "aiowax.window.SlidingWindow": (
        ("length", _EMPTY, False),
        ("offset", _EMPTY, False),
        ("align_to", _EMPTY, False),
    ),
    "aiowax.window.SessionWindow": (("gap", _EMPTY, False),),
    # get_fs_id as in the reference (0.18); on_replaced is ours (D6).
    "aiowax.connectors.files.FileSource": (
        ("path", _EMPTY, False),
        ("batch_size", 1000, False),
        ("get_fs_id", _get_path_dev, False),
        ("on_replaced", "error", True),
    ),
    "aiowax.connectors.files.DirSource": (
        ("dir_path", _EMPTY, False),
        ("glob_pat", "*", False),
        ("batch_size", 1000, False),
        ("get_fs_id", _get_path_dev, False),
        ("on_replaced", "error", True),
    ),
    "aiowax.connectors.files.CSVSource": (
        ("path", _EMPTY, False),
        ("batch_size", 1000, False),
        ("get_fs_id", _get_path_dev, False),
        ("on_replaced", "error", True),
    ),
    "aiowax.connectors.files.FileSink": (("path", _EMPTY, False), ("end", "\n", False)),
    "aiowax.window.WindowMetadata": (
        ("open_time", _EMPTY, False),
        ("close_time", _EMPTY, False),
    ),
}

_TYPING_HELPERS = (typing.TypeVar, typing.ParamSpec, typing.TypeVarTuple)
#: The type of ``annotations``, bound by ``from __future__ import annotations``.
_FUTURE_FEATURE = type(annotations)


def _is_public_module(name: str) -> bool:
    return name in PUBLIC_MODULES


def _exported_by_another_public_module(obj: object, module_name: str) -> bool:
    home = getattr(obj, "__module__", None)
    if not isinstance(home, str) or home == module_name or not _is_public_module(home):
        return False
    name = getattr(obj, "__name__", None)
    home_module = sys.modules[home]
    return name in getattr(home_module, "__all__", ()) and getattr(home_module, name) is obj


def public_names(module: types.ModuleType) -> set[str]:
    """The names of ``module`` that are its public API (see the module doc)."""
    names = set()
    for name, obj in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(obj, (types.ModuleType, _FUTURE_FEATURE, *_TYPING_HELPERS)):
            continue
        if any(obj is helper for helper in INTERNAL_HELPERS):
            continue
        if inspect.isclass(obj) or inspect.isroutine(obj):
            home = getattr(obj, "__module__", "") or ""
            if home != "aiowax" and not home.startswith("aiowax."):
                continue  # imported from the standard library or a dependency
            if _exported_by_another_public_module(obj, module.__name__):
                continue
        elif getattr(obj, "__module__", None) == "typing":
            continue  # typing special forms such as Any, which are not classes
        names.add(name)
    return names


def _import(name: str) -> types.ModuleType:
    return importlib.import_module(name)


@pytest.fixture(scope="module", autouse=True)
def _import_every_public_module() -> None:
    # Fixing up __module__ happens at import; see every module imported.
    for name in PUBLIC_MODULES:
        _import(name)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_all_is_a_list_of_unique_strings(module_name: str) -> None:
    module = _import(module_name)
    assert hasattr(module, "__all__"), f"{module_name} has no __all__"
    exported = module.__all__
    assert isinstance(exported, list | tuple)
    assert all(isinstance(n, str) for n in exported)
    assert len(set(exported)) == len(exported), f"duplicates in {module_name}.__all__"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_name_in_all_exists(module_name: str) -> None:
    module = _import(module_name)
    missing = [n for n in module.__all__ if not hasattr(module, n)]
    assert missing == [], f"{module_name}.__all__ lists missing names"
    namespace: dict[str, Any] = {}
    exec(f"from {module_name} import *", namespace)
    assert set(module.__all__) <= set(namespace)


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_public_name_is_in_all(module_name: str) -> None:
    module = _import(module_name)
    forgotten = sorted(public_names(module) - set(module.__all__))
    assert forgotten == [], f"public names of {module_name} missing from __all__"


def _fake_module(exported: Iterable[str], **names: object) -> types.ModuleType:
    module = types.ModuleType("aiowax.fake_public")
    module.__dict__.update(names)
    module.__all__ = list(exported)  # type: ignore[attr-defined]
    return module


def test_public_names_catches_a_forgotten_definition_and_reexport() -> None:
    def helper() -> None: ...

    helper.__module__ = "aiowax.fake_public"
    reexported = type("Reexported", (), {"__module__": "aiowax._private_home"})
    module = _fake_module(
        ["helper"],
        helper=helper,
        Reexported=reexported,
        CONSTANT=42,
        T=typing.TypeVar("T"),
        annotations=annotations,
        timedelta=timedelta,
        Any=Any,
        Dataflow=aiowax.dataflow.Dataflow,
        fixup_module_metadata=aiowax._util.fixup_module_metadata,
        dataflow=aiowax.dataflow,
        _private=object(),
    )
    assert public_names(module) == {"helper", "Reexported", "CONSTANT"}


def test_fixup_module_metadata_claims_only_private_homes() -> None:
    class Outer:
        class Inner(Exception): ...

        class _Hidden: ...

    class Elsewhere: ...

    def helper() -> None: ...

    Outer.Alias = Elsewhere  # type: ignore[attr-defined]  # assigned, not nested
    for obj in (Outer, Outer.Inner, Outer._Hidden, Elsewhere, helper):
        obj.__module__ = "aiowax._private_home"
    claimed = type("Claimed", (), {"__module__": "aiowax.first_public"})
    ns = {"Outer": Outer, "helper": helper, "Claimed": claimed, "CONSTANT": 42}
    aiowax._util.fixup_module_metadata("aiowax.fake_public", list(ns), ns)
    assert Outer.__module__ == "aiowax.fake_public"
    assert Outer.Inner.__module__ == "aiowax.fake_public"
    assert helper.__module__ == "aiowax.fake_public"
    # A public home is kept: the first public module to export an object owns it.
    assert claimed.__module__ == "aiowax.first_public"
    # Private nested classes and classes merely assigned to an attribute are not
    # the exported class's own.
    assert Outer._Hidden.__module__ == "aiowax._private_home"
    assert Elsewhere.__module__ == "aiowax._private_home"


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_exported_classes_and_functions_report_a_public_module(module_name: str) -> None:
    module = _import(module_name)
    wrong = {}
    for name in module.__all__:
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        home = obj.__module__
        if not _is_public_module(home) or name not in _import(home).__all__:
            wrong[name] = home
        elif getattr(_import(home), obj.__qualname__) is not obj:
            wrong[name] = f"{home}.{obj.__qualname__} is another object"
    assert wrong == {}, f"exported by {module_name} with a private __module__"


def test_window_metadata_reports_aiowax_window() -> None:
    assert aiowax.window.WindowMetadata.__module__ == "aiowax.window"
    assert aiowax.dataflow.Dataflow.__module__ == "aiowax.dataflow"
    assert aiowax.testing.TestingSource.__module__ == "aiowax.testing"


_SUBPROCESS_PROBE = """
import importlib, inspect, json, sys
module = importlib.import_module(sys.argv[1])
print(json.dumps({
    name: getattr(module, name).__module__
    for name in module.__all__
    if inspect.isclass(getattr(module, name)) or inspect.isroutine(getattr(module, name))
}))
"""


@pytest.mark.parametrize(
    "module_name",
    PUBLIC_MODULES,
)
def test_public_module_alone_reports_public_modules(module_name: str) -> None:
    # __module__ is fixed up when a public module is imported; importing one
    # module alone, in a fresh interpreter, must be enough for its names.
    done = subprocess.run(
        [sys.executable, "-c", _SUBPROCESS_PROBE, module_name],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    homes = json.loads(done.stdout)
    private = {name: home for name, home in homes.items() if not _is_public_module(home)}
    assert private == {}


def test_nested_public_classes_report_a_public_module() -> None:
    wrong = {}
    for module_name in PUBLIC_MODULES:
        module = _import(module_name)
        for name in module.__all__:
            outer = getattr(module, name)
            if not inspect.isclass(outer):
                continue
            for attr, inner in vars(outer).items():
                nested = (
                    not attr.startswith("_")
                    and inspect.isclass(inner)
                    and inner.__qualname__ == f"{outer.__qualname__}.{attr}"
                )
                if nested and not _is_public_module(inner.__module__):
                    wrong[f"{module_name}.{name}.{attr}"] = inner.__module__
    assert wrong == {}


@pytest.mark.parametrize(
    ("module_name", "dotted"),
    [(module, dotted) for module, names in API_MD_NAMES.items() for dotted in names],
)
def test_api_md_name_exists_and_is_exported(module_name: str, dotted: str) -> None:
    module = _import(module_name)
    top, *rest = dotted.split(".")
    assert top in module.__all__
    obj: object = getattr(module, top)
    for part in rest:
        assert hasattr(obj, part), f"{module_name}.{dotted} is missing"
        obj = getattr(obj, part)
    assert callable(obj)


def test_api_md_modules_are_the_public_modules() -> None:
    # connectors has no names of its own until files/kafka land.
    assert set(API_MD_NAMES) == set(PUBLIC_MODULES) - NOT_IN_API_MD


def test_testing_source_markers_and_retry_behave_as_documented() -> None:
    from aiowax.inputs import SimplePollingSource
    from aiowax.testing import TestingSource

    assert issubclass(SimplePollingSource.Retry, Exception)
    assert SimplePollingSource.Retry(timedelta(seconds=1)).timeout == timedelta(seconds=1)
    assert TestingSource.EOF() is not TestingSource.EOF()
    assert isinstance(TestingSource.ABORT(), TestingSource.ABORT)


def _resolve(dotted: str) -> Any:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            obj = getattr(obj, part)
        return obj
    raise AssertionError(dotted)


@pytest.mark.parametrize("dotted", sorted(API_MD_SIGNATURES))
def test_api_md_signature(dotted: str) -> None:
    sig = inspect.signature(_resolve(dotted))
    got = tuple(
        (p.name, p.default, p.kind is _KW)
        for p in sig.parameters.values()
        if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    )
    assert got == API_MD_SIGNATURES[dotted]
