"""One error tree: every public exception is defined in `aiowax._errors`.

Public modules only re-export them, and each reports the public module it is
exported from as its ``__module__``, whichever public module a program
imports first.
"""

from __future__ import annotations

import importlib
import inspect
import json
import pickle
import pkgutil
import subprocess
import sys
import types
from datetime import timedelta
from typing import Any

import anyio
import pytest

import aiowax
import aiowax._errors


def _public_module_names() -> list[str]:
    """Every module of aiowax with no private part in its name."""
    names = ["aiowax"]
    for info in pkgutil.walk_packages(aiowax.__path__, "aiowax."):
        parts = info.name.split(".")
        if not any(part.startswith("_") for part in parts):
            names.append(info.name)
    return sorted(names)


PUBLIC_MODULES = _public_module_names()

#: Exceptions nested in a public class, as the reference API has them; the
#: only ones allowed outside `aiowax._errors`.
NESTED_EXCEPTIONS = {"aiowax.inputs.SimplePollingSource.Retry"}


def _import(name: str) -> types.ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        # An optional extra that is not installed (aiostream).
        if error.name is not None and not error.name.startswith("aiowax"):
            return None
        raise


def _exported_exceptions() -> dict[str, type[BaseException]]:
    """``{"module.Name": class}`` for each exception class in an ``__all__``."""
    found = {}
    for module_name in PUBLIC_MODULES:
        module = _import(module_name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if inspect.isclass(obj) and issubclass(obj, BaseException):
                found[f"{module_name}.{name}"] = obj
    return found


def _nested_exceptions() -> dict[str, type[BaseException]]:
    """Exception classes defined in the body of an exported class."""
    found = {}
    for module_name in PUBLIC_MODULES:
        module = _import(module_name)
        for name in getattr(module, "__all__", ()):
            outer = getattr(module, name)
            if not inspect.isclass(outer):
                continue
            for attr, inner in vars(outer).items():
                if (
                    inspect.isclass(inner)
                    and issubclass(inner, BaseException)
                    and inner.__qualname__ == f"{outer.__qualname__}.{attr}"
                ):
                    found[f"{module_name}.{name}.{attr}"] = inner
    return found


def test_public_modules_are_found() -> None:
    # Guards the walk itself: these export exceptions.
    for name in ("aiowax", "aiowax.inputs", "aiowax.recovery", "aiowax.connectors.inproc"):
        assert name in PUBLIC_MODULES


def test_every_exported_exception_is_defined_in_errors() -> None:
    exported = _exported_exceptions()
    assert "aiowax.recovery.RecoveryError" in exported
    elsewhere = {
        dotted: cls.__qualname__
        for dotted, cls in exported.items()
        if getattr(aiowax._errors, cls.__name__, None) is not cls
    }
    assert elsewhere == {}, "public exceptions defined outside aiowax._errors"


def test_nested_exceptions_are_the_reference_ones() -> None:
    assert set(_nested_exceptions()) == NESTED_EXCEPTIONS


def test_every_error_class_is_exported() -> None:
    exported = set(_exported_exceptions().values())
    defined = {
        obj
        for obj in vars(aiowax._errors).values()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
    }
    assert defined - exported == set(), "aiowax._errors defines exceptions nobody exports"


def test_error_tree() -> None:
    from aiowax.connectors import inproc
    from aiowax.recovery import (
        InconsistentPartitionsError,
        MissingPartitionsError,
        NoPartitionsError,
        RecoveryError,
        RecoveryLockedError,
        RecoveryPermissionError,
        UnmatchedSnapshotsError,
    )

    outside_the_tree = {
        name
        for name, cls in _exported_exceptions().items()
        if not issubclass(cls, aiowax.AiowaxError)
    }
    # AbortExecution is a RuntimeError, as in the reference.
    assert outside_the_tree == {"aiowax.AbortExecution", "aiowax.inputs.AbortExecution"}
    assert issubclass(aiowax.AbortExecution, RuntimeError)
    assert issubclass(aiowax.FlowDefinitionError, ValueError)
    for cls in (RecoveryLockedError, UnmatchedSnapshotsError):
        assert cls.__bases__ == (RecoveryError,)
    # Bytewax 0.17.2's are a FileNotFoundError, a FileNotFoundError and a
    # ValueError: code written for it that catches those catches ours.
    assert NoPartitionsError.__bases__ == (RecoveryError, FileNotFoundError)
    assert MissingPartitionsError.__bases__ == (RecoveryError, FileNotFoundError)
    assert InconsistentPartitionsError.__bases__ == (RecoveryError, ValueError)
    # Also a PermissionError, so code that handles those handles it.
    assert RecoveryPermissionError.__bases__ == (RecoveryError, PermissionError)
    assert RecoveryError.__bases__ == (aiowax.AiowaxError,)
    assert issubclass(inproc.SourceFullError, anyio.WouldBlock)
    assert inproc.SourceClosedError.__bases__ == (aiowax.AiowaxError,)
    assert inproc.SubscriberOverflowError.__bases__ == (aiowax.AiowaxError,)


@pytest.mark.parametrize(
    ("dotted", "home"),
    [
        ("aiowax.AiowaxError", "aiowax"),
        ("aiowax.FlowDefinitionError", "aiowax"),
        ("aiowax.AbortExecution", "aiowax.inputs"),
        ("aiowax.inputs.SimplePollingSource.Retry", "aiowax.inputs"),
        ("aiowax.recovery.RecoveryError", "aiowax.recovery"),
        ("aiowax.recovery.NoPartitionsError", "aiowax.recovery"),
        ("aiowax.recovery.MissingPartitionsError", "aiowax.recovery"),
        ("aiowax.recovery.InconsistentPartitionsError", "aiowax.recovery"),
        ("aiowax.recovery.RecoveryLockedError", "aiowax.recovery"),
        ("aiowax.recovery.RecoveryPermissionError", "aiowax.recovery"),
        ("aiowax.recovery.UnmatchedSnapshotsError", "aiowax.recovery"),
        ("aiowax.connectors.inproc.SourceClosedError", "aiowax.connectors.inproc"),
        ("aiowax.connectors.inproc.SourceFullError", "aiowax.connectors.inproc"),
        ("aiowax.connectors.inproc.SubscriberOverflowError", "aiowax.connectors.inproc"),
    ],
)
def test_exceptions_report_their_public_home_and_pickle(dotted: str, home: str) -> None:
    cls = _resolve(dotted)
    assert cls.__module__ == home
    # Pickled by that public name, so a pickle survives moves of private modules.
    assert home.encode() in pickle.dumps(cls)
    assert pickle.loads(pickle.dumps(cls)) is cls
    error = cls(timedelta(seconds=1)) if cls.__name__ == "Retry" else cls("message")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert copy.args == error.args


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


# -- import order --------------------------------------------------------------------------

_HOMES_PROBE = """
import importlib, inspect, json, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name.startswith("aiowax"):
            raise
homes = {}
for name in sys.argv[1:]:
    module = sys.modules.get(name)
    for export in getattr(module, "__all__", ()):
        obj = getattr(module, export)
        if inspect.isclass(obj) or inspect.isroutine(obj):
            homes[f"{name}.{export}"] = obj.__module__
        if inspect.isclass(obj):
            for attr, inner in vars(obj).items():
                if inspect.isclass(inner) and inner.__qualname__ == f"{obj.__qualname__}.{attr}":
                    homes[f"{name}.{export}.{attr}"] = inner.__module__
print(json.dumps(homes, sort_keys=True))
"""


def _homes(first: str) -> dict[str, str]:
    """``__module__`` of every export, in a fresh interpreter that imports ``first`` first."""
    order = [first, *(name for name in PUBLIC_MODULES if name != first)]
    done = subprocess.run(
        [sys.executable, "-c", _HOMES_PROBE, *order],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    homes: dict[str, str] = json.loads(done.stdout)
    return homes


@pytest.fixture(scope="module")
def reference_homes() -> dict[str, str]:
    return _homes("aiowax")


@pytest.mark.parametrize("first", PUBLIC_MODULES)
def test_homes_do_not_depend_on_import_order(first: str, reference_homes: dict[str, str]) -> None:
    assert _homes(first) == reference_homes
    assert reference_homes["aiowax.AbortExecution"] == "aiowax.inputs"
    assert reference_homes["aiowax.inputs.SimplePollingSource.Retry"] == "aiowax.inputs"


@pytest.mark.parametrize(
    "imports",
    ["import aiowax; import aiowax.inputs", "import aiowax.inputs; import aiowax"],
    ids=["aiowax-first", "inputs-first"],
)
def test_abort_execution_reports_aiowax_inputs(imports: str) -> None:
    show = "print(aiowax.AbortExecution.__module__, aiowax.inputs.AbortExecution.__module__)"
    code = f"{imports}; {show}"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.split() == ["aiowax.inputs", "aiowax.inputs"]
