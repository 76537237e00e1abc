"""Finding the flow an import string names, for the command line.

``module``, ``module:attr``, ``module:factory(literal args)``, or a path to a
``.py`` file (optionally followed by ``:attr`` or ``:factory(...)``). Factory
arguments are parsed with `ast` and must be literals: nothing is evaluated.
Errors name the import string and say what went wrong; a traceback is shown
only when the user's own code raised.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import reprlib
import sys
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from aiowax._definition.flow import Dataflow

#: The attribute looked up when the import string names only a module.
DEFAULT_ATTR = "flow"

# A path: everything up to the first ".py" that ends the string or is
# followed by ":" (so "C:\\dir\\f.py:get('a:b')" splits right).
_PATH_RE = re.compile(r"(?P<path>.+?\.py)(?::(?P<obj>.*))?\Z", re.DOTALL)


class FlowImportError(Exception):
    """The import string is malformed, or does not lead to a `Dataflow`.

    Attributes:
        message: What went wrong, naming the import string.
        details: The formatted traceback of the user's code when the problem
            is an exception raised there (a bug in the user's module or
            factory), else ``None``.
    """

    def __init__(self, message: str, *, details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


@dataclass(frozen=True)
class ImportTarget:
    """A parsed import string: where the flow lives and how to get it.

    Exactly one of ``module`` and ``path`` is set.

    Attributes:
        text: The import string as given, for messages.
        module: The dotted module name, for the module forms.
        path: The ``.py`` file, for the path forms (as given, not resolved).
        attr: The attribute of the module: the flow, or the factory to call.
        call: Whether the attribute is a factory to call.
        args: The factory's positional arguments (Python literals).
        kwargs: The factory's keyword arguments (Python literals).
    """

    text: str
    module: str | None = None
    path: Path | None = None
    attr: str = DEFAULT_ATTR
    call: bool = False
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def shown(self) -> str:
        """``text`` for messages: quoted, its middle cut when it is very long."""
        return _TEXT_REPR.repr(self.text)

    @property
    def expression(self) -> str:
        """The attribute part, normalized: ``flow`` or ``get_flow('x', n=2)``."""
        if not self.call:
            return self.attr
        parts = [repr(a) for a in self.args]
        parts += [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"{self.attr}({', '.join(parts)})"


def _invalid(import_str: str, reason: str) -> FlowImportError:
    return FlowImportError(f"invalid import string {import_str!r}: {reason}")


def _is_dotted_name(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def import_from_cwd() -> None:
    """Make the current directory importable first, as ``python -m`` does.

    So ``module`` finds ``./module.py`` from a console script too, which
    does not get it from Python.
    """
    cwd = os.getcwd()
    if sys.path[:1] not in ([cwd], [""]):
        sys.path.insert(0, cwd)


def parse_import_str(import_str: str) -> ImportTarget:
    """Parse an import string, without importing anything.

    The forms are ``module`` (the attribute defaults to ``flow``),
    ``module:attr``, ``module:factory(args)`` and the same three with a path
    to a ``.py`` file instead of a dotted module name. Factory arguments must
    be Python literals (strings, numbers, tuples, lists, dicts, sets, ``True``,
    ``False``, ``None``), positional or by keyword: they are read with `ast`,
    never evaluated.

    A target ending in ``.py`` or containing a path separator is a file path;
    anything else must be a dotted module name.

    Args:
        import_str: The import string from the command line.

    Returns:
        The parsed target.

    Raises:
        FlowImportError: The string is malformed; the message says why.

    >>> parse_import_str("examples.wordcount:get_flow('in.txt', top=3)")
    ImportTarget(text=..., module='examples.wordcount', path=None, attr='get_flow',
    call=True, args=('in.txt',), kwargs={'top': 3})
    """
    if not import_str.strip():
        raise _invalid(import_str, "it is empty")
    head, colon, rest = import_str.partition(":")
    if (
        _is_dotted_name(head)
        and head.rsplit(".", 1)[-1] != "py"
        and not rest.startswith(("/", "\\"))
    ):
        obj = rest if colon else None
        return _parse_object(import_str, obj, module=head)
    match = _PATH_RE.match(import_str)
    if match is None:
        msg = (
            "expected 'module', 'module:attr', 'module:factory(...)' or a path "
            f"to a .py file, optionally followed by ':attr'; {head!r} is neither "
            "a dotted module name nor a .py path"
        )
        raise _invalid(import_str, msg)
    return _parse_object(import_str, match["obj"], path=Path(match["path"]))


def _parse_object(
    import_str: str,
    obj: str | None,
    *,
    module: str | None = None,
    path: Path | None = None,
) -> ImportTarget:
    if obj is None:
        return ImportTarget(import_str, module, path)
    if not obj.strip():
        raise _invalid(import_str, "no attribute name after ':'")
    try:
        expr = ast.parse(obj.strip(), mode="eval").body
    except SyntaxError as exc:
        raise _invalid(
            import_str, f"{obj!r} is not an attribute name or a factory call ({exc.msg})"
        ) from None
    if isinstance(expr, ast.Name):
        return ImportTarget(import_str, module, path, expr.id)
    if not isinstance(expr, ast.Call):
        raise _invalid(import_str, f"{obj!r} is not an attribute name or a factory call")
    if not isinstance(expr.func, ast.Name):
        msg = f"the factory must be a plain name, like 'get_flow(...)', got {obj!r}"
        raise _invalid(import_str, msg)
    args: list[Any] = []
    for node in expr.args:
        if isinstance(node, ast.Starred):
            raise _invalid(import_str, "*args cannot be used in a factory call")
        args.append(_literal(import_str, node))
    kwargs: dict[str, Any] = {}
    for keyword in expr.keywords:
        if keyword.arg is None:
            raise _invalid(import_str, "**kwargs cannot be used in a factory call")
        if keyword.arg in kwargs:
            raise _invalid(import_str, f"keyword argument {keyword.arg!r} is repeated")
        kwargs[keyword.arg] = _literal(import_str, keyword.value)
    return ImportTarget(import_str, module, path, expr.func.id, True, tuple(args), kwargs)


def _literal(import_str: str, node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        msg = (
            f"factory arguments must be Python literals (strings, numbers, "
            f"tuples, lists, dicts, sets, booleans, None), got {ast.unparse(node)!r}"
        )
        raise _invalid(import_str, msg) from None


# -- importing ----------------------------------------------------------------


def _frame_module(tb: TracebackType) -> str:
    name = tb.tb_frame.f_globals.get("__name__")
    return name if isinstance(name, str) else ""


def _in_packages(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


#: Frames of the import system and of this module: not the user's code.
_IMPORT_MACHINERY = ("importlib", __name__, "aiowax._cli")
#: Frames that start and drive a flow: a flow's traceback starts after them.
_RUN_MACHINERY = ("aiowax", "anyio", "asyncio", "uvloop")


def _is_machinery(tb: TracebackType) -> bool:
    """Whether a traceback entry belongs to the import system or to this module."""
    return _in_packages(_frame_module(tb), _IMPORT_MACHINERY)


def format_user_traceback(exc: BaseException) -> str:
    """Format ``exc`` with its traceback, skipping the import machinery frames.

    Args:
        exc: An exception raised by the user's module or factory.

    Returns:
        The traceback text, starting at the first frame of the user's code
        (notes and chained exceptions included).
    """
    tb = exc.__traceback__
    while tb is not None and _is_machinery(tb):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def format_flow_traceback(exc: BaseException) -> str:
    """Format an exception raised by a running flow, starting at the user's code.

    The frames of the CLI, the event loop and the engine that lead to the
    user's function are left out; when no frame is the user's (a bug in
    aiowax itself), the whole traceback is kept.

    Args:
        exc: The exception that `aiowax.run` raised.

    Returns:
        The traceback text, with the exception's notes (which name the step).
    """
    tb = exc.__traceback__
    while tb is not None and _in_packages(_frame_module(tb), _RUN_MACHINERY):
        tb = tb.tb_next
    if tb is None:
        tb = exc.__traceback__
    return "".join(traceback.format_exception(type(exc), exc, tb))


def raised_by_aiowax(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by aiowax's own code rather than by the user's.

    The last entry of a traceback is where the exception was raised, and
    passing through the engine on the way out does not change it: an error
    raised by a user's step function keeps that function's frame there, even
    when its class is one of aiowax's.
    """
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return _in_packages(_frame_module(tb), ("aiowax",))


def _is_not_found(exc: ImportError, name: str) -> bool:
    """Whether ``exc`` says that module ``name`` (or a parent) does not exist.

    An ImportError raised by code inside the user's module (a missing
    dependency, say) is the user's bug, not a wrong import string: that one
    has a frame of the user's code in its traceback.
    """
    if not isinstance(exc, ModuleNotFoundError) or exc.name is None:
        return False
    if name != exc.name and not name.startswith(exc.name + "."):
        return False
    tb = exc.__traceback__
    while tb is not None:
        if not _is_machinery(tb):
            return False
        tb = tb.tb_next
    return True


def _import_module(target: ImportTarget, name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as exc:
        if isinstance(exc, ImportError) and _is_not_found(exc, name):
            reason = f"module {name!r} not found"
            if exc.name != name:
                reason += f" (no module named {exc.name!r})"
            elif "; " in str(exc):  # "...; 'pkg' is not a package"
                reason += f" ({str(exc).split('; ', 1)[1]})"
            raise FlowImportError(f"cannot load {target.shown}: {reason}") from exc
        msg = f"cannot load {target.shown}: importing module {name!r} raised {type(exc).__name__}"
        raise FlowImportError(msg, details=format_user_traceback(exc)) from exc


def _module_name_for_path(path: Path) -> tuple[list[str], Path]:
    """The module name of a ``.py`` file, by part, and the directory to import it from.

    Like Flask's CLI: walk up while the directory is a package (has an
    ``__init__.py``), so a file inside a package is imported as part of it and
    its relative imports work.
    """
    parts = [] if path.stem == "__init__" else [path.stem]
    directory = path.parent
    if not parts:
        parts.append(directory.name)
        directory = directory.parent
    while (directory / "__init__.py").is_file() and directory.name:
        parts.append(directory.name)
        directory = directory.parent
    return parts[::-1], directory


def _import_path(target: ImportTarget, path: Path) -> ModuleType:
    absolute = Path(os.path.abspath(path))
    if not absolute.is_file():
        what = "is not a file" if absolute.exists() else "not found"
        msg = f"cannot load {target.shown}: file {str(path)!r} {what}"
        raise FlowImportError(msg)
    parts, directory = _module_name_for_path(absolute)
    name = ".".join(parts)
    # By part: "x.y.py" would read as module y of a package x. (A dash is
    # fine: importlib takes "my-flow", which no import statement could.)
    if any(not part or "." in part for part in parts):
        msg = (
            f"cannot load {target.shown}: {str(path)!r} cannot be imported as "
            f"module {name!r}; rename it (a dot in a name reads as a package)"
        )
        raise FlowImportError(msg)
    if sys.path[:1] != [str(directory)]:
        sys.path.insert(0, str(directory))
    module = _import_module(target, name)
    loaded = getattr(module, "__file__", None)
    if loaded is None or not _same_file(loaded, absolute):
        msg = (
            f"cannot load {target.shown}: {str(path)!r} would be imported as "
            f"module {name!r}, but that name already belongs to "
            f"{loaded or module!r}; rename the file"
        )
        raise FlowImportError(msg)
    return module


def _same_file(a: str | Path, b: str | Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _dataflow_names(module: ModuleType) -> list[str]:
    return sorted(n for n, v in vars(module).items() if isinstance(v, Dataflow))


def load_target(target: ImportTarget) -> object:
    """Import the target's module and return its attribute or factory result.

    A module is imported from `sys.path` (`main` puts the current directory
    first, as ``python -m`` does); a ``.py`` file is imported with its
    directory, or the parent of its top package, put first on `sys.path`.

    Args:
        target: A parsed import string.

    Returns:
        The attribute, or what the factory returned: when the factory is an
            ``async def`` function, the awaitable it returned (not awaited yet).
            Use `check_dataflow` on the (awaited) result.

    Raises:
        FlowImportError: The module, file or attribute does not exist, the
            factory cannot take the arguments, or user code raised while
            importing the module or calling the factory (then ``details``
            holds its traceback).
    """
    if target.path is not None:
        module = _import_path(target, target.path)
    else:
        assert target.module is not None
        module = _import_module(target, target.module)
    try:
        obj = getattr(module, target.attr)
    except AttributeError:
        reason = f"module {module.__name__!r} has no attribute {target.attr!r}"
        if target.attr == DEFAULT_ATTR and not target.call and ":" not in target.text:
            reason += " (the default; name another one with 'MODULE:ATTR')"
        found = _dataflow_names(module)
        if found:
            reason += f"; its Dataflow attributes are: {', '.join(found)}"
        raise FlowImportError(f"cannot load {target.shown}: {reason}") from None
    except Exception as exc:
        msg = (
            f"cannot load {target.shown}: getting attribute {target.attr!r} of "
            f"module {module.__name__!r} raised {type(exc).__name__}"
        )
        raise FlowImportError(msg, details=format_user_traceback(exc)) from exc
    if not target.call:
        return obj
    return _call_factory(target, module, obj)


def _call_factory(target: ImportTarget, module: ModuleType, factory: object) -> object:
    where = f"{target.attr!r} in module {module.__name__!r}"
    if not callable(factory):
        msg = f"cannot load {target.shown}: {where} is not callable, got {_short(factory)}"
        raise FlowImportError(msg)
    try:
        signature: inspect.Signature | None = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins have none
        signature = None
    if signature is not None:
        try:
            signature.bind(*target.args, **target.kwargs)
        except TypeError as exc:
            msg = (
                f"cannot load {target.shown}: {where} cannot be called as "
                f"{target.expression}: {exc} (its signature is {target.attr}{signature})"
            )
            raise FlowImportError(msg) from None
    try:
        return factory(*target.args, **target.kwargs)
    except Exception as exc:
        raise factory_raised(target, exc) from exc


def factory_raised(target: ImportTarget, exc: Exception) -> FlowImportError:
    msg = f"cannot load {target.shown}: factory {target.expression} raised {type(exc).__name__}"
    return FlowImportError(msg, details=format_user_traceback(exc))


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60
#: An import string in a message: long enough for a path and a factory call,
#: short of a runaway one shown twice, once whole and once in the reason.
_TEXT_REPR = reprlib.Repr()
_TEXT_REPR.maxstring = 160


def _short(obj: object) -> str:
    if inspect.isroutine(obj) or inspect.isclass(obj) or inspect.ismodule(obj):
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", "?")
        return f"{type(obj).__name__} {name!r}"
    return f"{type(obj).__name__} {_REPR.repr(obj)}"


def check_dataflow(obj: object, target: ImportTarget) -> Dataflow:
    """Return ``obj`` if it is a `Dataflow`, else raise a helpful error.

    Args:
        obj: What `load_target` returned (awaited, for an async factory).
        target: The import string it came from.

    Returns:
        ``obj``, typed.

    Raises:
        FlowImportError: ``obj`` is not a `Dataflow`.
    """
    if isinstance(obj, Dataflow):
        return obj
    if target.call:
        what = f"factory {target.expression} returned {_short(obj)}"
    else:
        what = f"attribute {target.attr!r} is {_short(obj)}"
    msg = f"cannot load {target.shown}: {what}, not an aiowax.dataflow.Dataflow"
    if not target.call and (inspect.isfunction(obj) or inspect.ismethod(obj)):
        prefix = target.text.rpartition(":")[0] if ":" in target.text else target.text
        msg += f"; to call it, pass '{prefix}:{target.attr}()'"
    elif type(obj).__module__.split(".")[0] == "bytewax":
        msg += "; build it with aiowax.dataflow.Dataflow instead of Bytewax's"
    raise FlowImportError(msg)
