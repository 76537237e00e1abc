"""The command line: ``python -m aiowax IMPORT_STR`` (or ``aiowax IMPORT_STR``).

A thin layer over the library: parse the import string, import the module,
find the `Dataflow` (calling a factory with literal arguments when asked),
then ``aiowax.run`` it on a fresh event loop (uvloop when installed).

Exit status: 0 when the flow's input ends, 1 when the flow raises (its
traceback goes to stderr), 2 on usage errors, when the flow cannot be
loaded and when the recovery directory cannot be resumed from, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import math
import os
import re
import reprlib
import select
import stat
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

from aiowax._definition.flow import Dataflow
from aiowax._recovery.config import RecoveryConfig
from aiowax._recovery.store import RecoveryError
from aiowax._run import run, run_sync
from aiowax._version import __version__

__all__ = [
    "DEFAULT_ATTR",
    "FlowImportError",
    "ImportTarget",
    "build_parser",
    "check_dataflow",
    "format_flow_traceback",
    "format_user_traceback",
    "load_target",
    "main",
    "parse_import_str",
]

#: The attribute looked up when the import string names only a module.
DEFAULT_ATTR = "flow"

#: Exit status when the flow cannot be loaded or the command line is wrong.
EXIT_USAGE = 2
#: Exit status when the flow raised.
EXIT_FLOW_FAILED = 1
#: Exit status on Ctrl-C (128 + SIGINT), as shells report it.
EXIT_INTERRUPTED = 130

ENV_WORKERS = "AIOWAX_WORKERS"
ENV_SNAPSHOT_INTERVAL = "AIOWAX_SNAPSHOT_INTERVAL"
ENV_RECOVERY_DIRECTORY = "AIOWAX_RECOVERY_DIRECTORY"
ENV_BACKUP_INTERVAL = "AIOWAX_BACKUP_INTERVAL"

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
_IMPORT_MACHINERY = ("importlib", __name__)
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
            raise FlowImportError(f"cannot load {target.text!r}: {reason}") from exc
        msg = f"cannot load {target.text!r}: importing module {name!r} raised {type(exc).__name__}"
        raise FlowImportError(msg, details=format_user_traceback(exc)) from exc


def _module_name_for_path(path: Path) -> tuple[str, Path]:
    """The module name of a ``.py`` file, and the directory to import it from.

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
    return ".".join(reversed(parts)), directory


def _import_path(target: ImportTarget, path: Path) -> ModuleType:
    absolute = Path(os.path.abspath(path))
    if not absolute.is_file():
        what = "is not a file" if absolute.exists() else "not found"
        msg = f"cannot load {target.text!r}: file {str(path)!r} {what}"
        raise FlowImportError(msg)
    name, directory = _module_name_for_path(absolute)
    if any(not part or "." in part for part in name.split(".")):
        msg = (
            f"cannot load {target.text!r}: {str(path)!r} cannot be imported as "
            f"module {name!r}; rename it so that every name is a valid identifier"
        )
        raise FlowImportError(msg)
    if sys.path[:1] != [str(directory)]:
        sys.path.insert(0, str(directory))
    module = _import_module(target, name)
    loaded = getattr(module, "__file__", None)
    if loaded is None or not _same_file(loaded, absolute):
        msg = (
            f"cannot load {target.text!r}: {str(path)!r} would be imported as "
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
        raise FlowImportError(f"cannot load {target.text!r}: {reason}") from None
    except Exception as exc:
        msg = (
            f"cannot load {target.text!r}: getting attribute {target.attr!r} of "
            f"module {module.__name__!r} raised {type(exc).__name__}"
        )
        raise FlowImportError(msg, details=format_user_traceback(exc)) from exc
    if not target.call:
        return obj
    return _call_factory(target, module, obj)


def _call_factory(target: ImportTarget, module: ModuleType, factory: object) -> object:
    where = f"{target.attr!r} in module {module.__name__!r}"
    if not callable(factory):
        msg = f"cannot load {target.text!r}: {where} is not callable, got {_short(factory)}"
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
                f"cannot load {target.text!r}: {where} cannot be called as "
                f"{target.expression}: {exc} (its signature is {target.attr}{signature})"
            )
            raise FlowImportError(msg) from None
    try:
        return factory(*target.args, **target.kwargs)
    except Exception as exc:
        raise _factory_raised(target, exc) from exc


def _factory_raised(target: ImportTarget, exc: Exception) -> FlowImportError:
    msg = f"cannot load {target.text!r}: factory {target.expression} raised {type(exc).__name__}"
    return FlowImportError(msg, details=format_user_traceback(exc))


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


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
    msg = f"cannot load {target.text!r}: {what}, not an aiowax.dataflow.Dataflow"
    if not target.call and (inspect.isfunction(obj) or inspect.ismethod(obj)):
        prefix = target.text.rpartition(":")[0] if ":" in target.text else target.text
        msg += f"; to call it, pass '{prefix}:{target.attr}()'"
    elif type(obj).__module__.split(".")[0] == "bytewax":
        msg += "; build it with aiowax.dataflow.Dataflow instead of Bytewax's"
    raise FlowImportError(msg)


# -- options ------------------------------------------------------------------


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"must be an integer >= 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _seconds(text: str) -> timedelta:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0 or math.isinf(value):
        msg = f"must be a number of seconds >= 0, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    try:
        return timedelta(seconds=value)
    except OverflowError:
        msg = f"is too large: {text!r} seconds"
        raise argparse.ArgumentTypeError(msg) from None


def _directory(text: str) -> Path:
    if not text:
        msg = "must not be empty"
        raise argparse.ArgumentTypeError(msg)
    return Path(text)


#: Options with an environment default: destination, variable, converter.
_ENV_DEFAULTS: tuple[tuple[str, str, Callable[[str], Any]], ...] = (
    ("workers", ENV_WORKERS, _workers),
    ("snapshot_interval", ENV_SNAPSHOT_INTERVAL, _seconds),
    ("recovery_directory", ENV_RECOVERY_DIRECTORY, _directory),
    ("backup_interval", ENV_BACKUP_INTERVAL, _seconds),
)

_DESCRIPTION = "Run an aiowax dataflow until its input ends."

_EPILOG = f"""\
IMPORT_STR forms:
  module                       the attribute '{DEFAULT_ATTR}' of a module (dotted name)
  module:attr                  another attribute of the module
  module:factory(args)         call a function that returns the flow; the
                               arguments must be Python literals, e.g.
                               'pkg.flows:get_flow("in.txt", top=10)'
                               (an 'async def' factory is awaited)
  path/to/file.py              the same three forms with a .py file: it is
  path/to/file.py:attr         imported with its directory (or the parent of
  path/to/file.py:factory(..)  its top package) first on sys.path

The current directory is importable, as with 'python -m'.

environment:
  Every option has an environment default, used when the option is not
  given on the command line; empty values count as unset:
  {ENV_WORKERS}, {ENV_SNAPSHOT_INTERVAL},
  {ENV_RECOVERY_DIRECTORY}, {ENV_BACKUP_INTERVAL}.

recovery:
  Make the recovery directory once, with as many partition files as you
  like ('python -m aiowax.recovery DIR COUNT'), then pass '-r DIR' to every
  run: a run after a crash resumes from the last epoch every worker
  finished, and a run after a clean end continues after what it read.

exit status:
  0 when the flow's input ends, 1 when the flow raises (the traceback goes
  to stderr), 2 on usage errors, when the flow cannot be loaded or when the
  recovery directory is unusable, 130 when interrupted with Ctrl-C.
"""


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    """Build the argument parser of the command line.

    Options default to ``None`` here; `main` fills them from the environment.

    Args:
        prog: The program name shown in usage and errors (default: from
            ``sys.argv[0]``).

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    parser.add_argument(
        "import_str",
        metavar="IMPORT_STR",
        help=f"where the flow is: 'module[:attr]' (attr defaults to '{DEFAULT_ATTR}'), "
        "'module:factory(args)', or a .py path with the same suffixes (see below)",
    )
    parser.add_argument(
        "-w",
        "--workers",
        metavar="N",
        type=_workers,
        help=f"workers to run in this process, at least 1 (env {ENV_WORKERS}; default: 1)",
    )
    parser.add_argument(
        "-s",
        "--snapshot-interval",
        metavar="SECONDS",
        type=_seconds,
        help="seconds between epoch ends, when state would be snapshotted; 0 makes "
        f"every input batch its own epoch (env {ENV_SNAPSHOT_INTERVAL}; default: 10)",
    )
    recovery = parser.add_argument_group(
        "recovery",
        "Snapshot state at every epoch end and resume from it after a crash.",
    )
    recovery.add_argument(
        "-r",
        "--recovery-directory",
        metavar="DIR",
        type=_directory,
        help="directory of the recovery partition files, made once with "
        f"'python -m aiowax.recovery DIR COUNT' (env {ENV_RECOVERY_DIRECTORY}; "
        "default: no recovery)",
    )
    recovery.add_argument(
        "-b",
        "--backup-interval",
        metavar="SECONDS",
        type=_seconds,
        help="seconds to keep superseded snapshots before garbage-collecting them; "
        f"needs -r (env {ENV_BACKUP_INTERVAL}; default: keep only what resuming needs)",
    )
    parser.add_argument("--version", action="version", version=f"aiowax {__version__}")
    return parser


def _apply_env_defaults(
    parser: argparse.ArgumentParser, options: argparse.Namespace, environ: Mapping[str, str]
) -> set[str]:
    """Fill unset options from the environment; return the ones filled so."""
    from_env: set[str] = set()
    for dest, variable, convert in _ENV_DEFAULTS:
        raw = environ.get(variable, "")
        if getattr(options, dest) is not None or not raw:
            continue
        try:
            setattr(options, dest, convert(raw))
        except argparse.ArgumentTypeError as exc:
            parser.error(f"environment variable {variable}: {exc}")
        from_env.add(dest)
    return from_env


def _init_command(directory: Path) -> str:
    return f"'python -m aiowax.recovery {directory} COUNT'"


def _recovery_config(
    parser: argparse.ArgumentParser, options: argparse.Namespace, from_env: set[str]
) -> RecoveryConfig | None:
    """The recovery configuration the options ask for, if any.

    A directory without partition files is a usage error, reported before
    the flow is imported; the other problems of a recovery directory (missing
    or inconsistent files) are found when the run opens it.
    """
    directory: Path | None = options.recovery_directory
    if directory is None:
        # From the environment alone, a backup interval is only checked:
        # a shell may export it for the runs that do recover.
        if options.backup_interval is not None and "backup_interval" not in from_env:
            parser.error("-b/--backup-interval only applies with -r/--recovery-directory")
        return None
    where = (
        f"environment variable {ENV_RECOVERY_DIRECTORY}"
        if "recovery_directory" in from_env
        else "-r/--recovery-directory"
    )
    shown = repr(str(directory))
    if not directory.exists():
        parser.error(
            f"{where}: recovery directory {shown} does not exist; create it and its "
            f"partition files with {_init_command(directory)}"
        )
    if not directory.is_dir():
        parser.error(f"{where}: recovery directory {shown} is not a directory")
    if next(directory.glob("part-*.sqlite3"), None) is None:
        parser.error(
            f"{where}: recovery directory {shown} holds no partition files; "
            f"create them with {_init_command(directory)}"
        )
    return RecoveryConfig(directory, backup_interval=options.backup_interval)


# -- running ------------------------------------------------------------------


def _stdout_is_broken_pipe() -> bool:
    """Whether standard output is a pipe whose reader went away."""
    try:
        fd = sys.__stdout__.fileno() if sys.__stdout__ is not None else 1
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() on Windows
        return False


def _silence_stdout() -> None:
    # Python would print an error when it flushes stdout at exit.
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def _error(prog: str, message: str, details: str | None = None) -> int:
    print(f"{prog}: error: {message}", file=sys.stderr)
    if details:
        print(details, end="" if details.endswith("\n") else "\n", file=sys.stderr)
    return EXIT_USAGE


async def _load_and_run(
    target: ImportTarget,
    obj: object,
    load_errors: list[FlowImportError],
    workers: int,
    epoch_interval: timedelta | None,
    recovery_config: RecoveryConfig | None,
) -> None:
    if inspect.isawaitable(obj):
        try:
            obj = await obj
        except Exception as exc:
            load_errors.append(_factory_raised(target, exc))
            return
    try:
        flow = check_dataflow(obj, target)
    except FlowImportError as exc:
        load_errors.append(exc)
        return
    await run(flow, workers=workers, epoch_interval=epoch_interval, recovery_config=recovery_config)


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the command line; return the exit status.

    This is the ``aiowax`` console script and ``python -m aiowax``.

    Args:
        argv: The arguments, without the program name (default:
            ``sys.argv[1:]``).
        prog: The program name for usage and messages (default: from
            ``sys.argv[0]``).

    Returns:
        0 when the flow's input ended, 1 when the flow raised (after printing
        its traceback to stderr), 2 when the flow could not be loaded or the
        recovery directory cannot be resumed from (after printing why), 130
        on `KeyboardInterrupt`.

    Raises:
        SystemExit: For ``--help``, ``--version`` and usage errors, as
            `argparse` does (status 0 or 2).
    """
    parser = build_parser(prog)
    try:
        options = parser.parse_args(argv)
        from_env = _apply_env_defaults(parser, options, os.environ)
        recovery_config = _recovery_config(parser, options, from_env)
        try:
            target = parse_import_str(options.import_str)
        except FlowImportError as exc:
            parser.error(exc.message)
        # As 'python -m' does, so 'module' finds ./module.py; the console
        # script does not get it from Python.
        cwd = os.getcwd()
        if sys.path[:1] not in ([cwd], [""]):
            sys.path.insert(0, cwd)
        load_errors: list[FlowImportError] = []
        try:
            obj = load_target(target)
            if not inspect.isawaitable(obj):
                obj = check_dataflow(obj, target)
        except FlowImportError as exc:
            return _error(parser.prog, exc.message, exc.details)
        try:
            run_sync(
                _load_and_run(
                    target,
                    obj,
                    load_errors,
                    options.workers or 1,
                    options.snapshot_interval,
                    recovery_config,
                )
            )
        except Exception as exc:
            if _is_recovery_setup_error(exc, recovery_config):
                # The directory cannot be resumed from: nothing of the flow ran.
                assert recovery_config is not None
                shown = repr(str(recovery_config.db_dir))
                message = f"cannot resume from recovery directory {shown}: {exc}"
                return _error(parser.prog, message)
            if isinstance(exc, BrokenPipeError) and _stdout_is_broken_pipe():
                _silence_stdout()
                return EXIT_FLOW_FAILED
            _flush_stdout()
            print(format_flow_traceback(exc), end="", file=sys.stderr)
            return EXIT_FLOW_FAILED
        if load_errors:
            error = load_errors[0]
            return _error(parser.prog, error.message, error.details)
        if not _flush_stdout():
            return EXIT_FLOW_FAILED
        return 0
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _is_recovery_setup_error(exc: Exception, config: RecoveryConfig | None) -> bool:
    """Whether ``exc`` says the recovery directory cannot be opened.

    Errors of user code carry a note naming their step; the ones of opening
    the recovery directory (missing or inconsistent partition files) do not.
    """
    return (
        config is not None
        and isinstance(exc, RecoveryError)
        and not getattr(exc, "__notes__", None)
    )


def _flush_stdout() -> bool:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return False
    except (OSError, ValueError):
        pass
    return True
