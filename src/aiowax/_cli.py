"""The command line: ``python -m aiowax IMPORT_STR`` (or ``aiowax IMPORT_STR``).

A thin layer over the library: parse the import string, import the module,
find the `Dataflow` (calling a factory with literal arguments when asked),
then run it in the background (`aiowax.start_flow`) of a fresh event loop
(uvloop when installed). SIGTERM and SIGINT stop it gracefully through its
`aiowax.FlowHandle`, within ``--stop-timeout``: that part, the running, is
`aiowax._cli_run`; this module is the argument layer around it.

Exit status: 0 when the flow's input ends or a signal stopped it
gracefully, 1 when the flow raises (its traceback goes to stderr), 2 on
usage errors, when the flow cannot be loaded and when the recovery directory
cannot be resumed from, 128 + the signal's number (130 for SIGINT, 143 for
SIGTERM) when the stop was aborted, or when Ctrl-C came before the flow
started.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import select
import stat
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from aiowax import _cli_cluster as _cluster_cli
from aiowax import _cli_http as _http_cli
from aiowax import _cli_progress as _progress
from aiowax._cli_run import DEFAULT_STOP_TIMEOUT, Companion
from aiowax._cli_run import run_until_stopped as _run_until_stopped
from aiowax._errors import ClusterError, RecoveryError
from aiowax._importer import (
    DEFAULT_ATTR,
    FlowImportError,
    ImportTarget,
    check_dataflow,
    factory_raised,
    format_flow_traceback,
    import_from_cwd,
    load_target,
    parse_import_str,
    raised_by_aiowax,
)
from aiowax._recovery.config import RecoveryConfig
from aiowax._run import run_sync
from aiowax._version import __version__

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
ENV_STOP_TIMEOUT = "AIOWAX_STOP_TIMEOUT"
ENV_LOG_LEVEL = "AIOWAX_LOG_LEVEL"


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in _progress.LOG_LEVELS:
        msg = f"expected one of {', '.join(_progress.LOG_LEVELS)}, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return level


def _count(text: str) -> int:
    try:
        value = int(text) if text.strip().isascii() else 0
    except ValueError:
        value = 0
    if value < 1:
        msg = f"must be an integer >= 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


#: The most workers one process takes: each is a set of tasks on one loop,
#: so a typo's 99999999999 would eat memory until the OOM killer came.
MAX_WORKERS = 1024

#: The most copies ``-p`` starts on one machine: a typo's 100000 would fork
#: until the machine gave out (each copy is a Python process of its own).
MAX_PROCESSES = 256


def _count_at_most(limit: int, why: str) -> Callable[[str], int]:
    """A `_count` that refuses more than ``limit``, saying ``why``."""

    def parse(text: str) -> int:
        value = _count(text)
        if value > limit:
            msg = f"must be at most {limit}, got {text!r} ({why})"
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


_workers = _count_at_most(
    MAX_WORKERS, "workers share one event loop; to use more cores, run more processes"
)
_processes = _count_at_most(
    MAX_PROCESSES, "for more copies, start them on more machines with the same --app-id"
)


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
    ("stop_timeout", ENV_STOP_TIMEOUT, _seconds),
    ("kafka_cluster", _cluster_cli.ENV_KAFKA_CLUSTER, _cluster_cli.brokers),
    ("app_id", _cluster_cli.ENV_APP_ID, str),
    ("processes", _cluster_cli.ENV_PROCESSES, _processes),
    ("cluster_partitions", _cluster_cli.ENV_CLUSTER_PARTITIONS, _count),
    ("replication_factor", _cluster_cli.ENV_REPLICATION_FACTOR, _count),
    ("kafka_config_file", _cluster_cli.ENV_KAFKA_CONFIG_FILE, _cluster_cli.config_file),
    ("http", _http_cli.ENV_HTTP, _http_cli.address),
    ("log_level", ENV_LOG_LEVEL, _log_level),
)

_DESCRIPTION = "Run an aiowax dataflow until its input ends or a signal stops it."

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
  Every option but --kafka-config has an environment default, used when
  the option is not given on the command line; empty values count as unset:
  {ENV_WORKERS}, {ENV_SNAPSHOT_INTERVAL}, {ENV_STOP_TIMEOUT},
  {ENV_RECOVERY_DIRECTORY}, {ENV_BACKUP_INTERVAL},
  {_cluster_cli.ENV_KAFKA_CLUSTER}, {_cluster_cli.ENV_APP_ID}, {_cluster_cli.ENV_PROCESSES},
  {_cluster_cli.ENV_CLUSTER_PARTITIONS}, {_cluster_cli.ENV_REPLICATION_FACTOR},
  {_cluster_cli.ENV_KAFKA_CONFIG_FILE}, {_http_cli.ENV_HTTP}, {ENV_LOG_LEVEL}.

progress:
  On a terminal, a run longer than two seconds keeps one line on stderr up
  to date: items read and written, their rates, the sources' lag, the
  epoch. stdout is left to the flow (a StdOutSink writes there).

stopping:
  SIGTERM (kill, docker stop, Kubernetes) or SIGINT (Ctrl-C) stops the flow
  gracefully: the sources stop reading and what they read is processed.
  With -r a final snapshot is committed (open windows and batches go into
  it, not out early), so the next run goes on where this one stopped;
  without -r they are flushed. If that takes longer than --stop-timeout, or
  on a second signal, the flow is aborted: sources and sinks are closed,
  but no final snapshot is taken (the next run resumes from the last epoch
  committed before, and replays what came after it). Keep --stop-timeout
  below the time your supervisor waits before SIGKILL (Kubernetes:
  terminationGracePeriodSeconds, 30 s by default; 'docker stop -t', 10 s).

recovery:
  Make the recovery directory once, with as many partition files as you
  like ('python -m aiowax.recovery DIR COUNT'), then pass '-r DIR' to every
  run: a run after a crash resumes from the last epoch every worker
  finished, and a run after a clean end continues after what it read.

exit status:
  0    the flow's input ended, or a signal stopped it gracefully
  1    the flow raised (the traceback goes to stderr)
  2    usage error, the flow cannot be loaded, or the recovery directory
       is unusable
  130  (128 + SIGINT) Ctrl-C before the flow started, or a stop after
       SIGINT aborted (--stop-timeout passed, or a second signal)
  143  (128 + SIGTERM) a stop after SIGTERM aborted, likewise
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
    # Bytewax 0.17.2's long name of -w, for migrated scripts (not in --help).
    parser.add_argument(
        "--workers-per-process", dest="workers", type=_workers, help=argparse.SUPPRESS
    )
    parser.add_argument(
        "-s",
        "--snapshot-interval",
        metavar="SECONDS",
        type=_seconds,
        help="seconds between epoch ends, when state would be snapshotted; 0 makes "
        f"every input batch its own epoch (env {ENV_SNAPSHOT_INTERVAL}; default: 10)",
    )
    parser.add_argument(
        "--stop-timeout",
        metavar="SECONDS",
        type=_seconds,
        help="seconds a graceful stop on SIGTERM or SIGINT may take before the flow "
        "is aborted without a final snapshot; a second signal aborts at once "
        f"(env {ENV_STOP_TIMEOUT}; default: {DEFAULT_STOP_TIMEOUT.total_seconds():g})",
    )
    _http_cli.add_options(parser)
    parser.add_argument(
        "--log-level",
        metavar="LEVEL",
        type=_log_level,
        help=f"write the aiowax logger's records at LEVEL and above to stderr, with their "
        f"time: one of {', '.join(_progress.LOG_LEVELS)} (env {ENV_LOG_LEVEL}; default: "
        "warnings and errors, as Python prints them)",
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
    _cluster_cli.add_options(parser, _processes)
    parser.add_argument("--version", action="version", version=f"aiowax {__version__}")
    return parser


#: What Bytewax 0.17.2's environment variables are here (None: nothing).
_BYTEWAX_ENV = {
    "BYTEWAX_WORKERS_PER_PROCESS": ENV_WORKERS,
    "BYTEWAX_SNAPSHOT_INTERVAL": ENV_SNAPSHOT_INTERVAL,
    "BYTEWAX_RECOVERY_DIRECTORY": ENV_RECOVERY_DIRECTORY,
    "BYTEWAX_RECOVERY_BACKUP_INTERVAL": ENV_BACKUP_INTERVAL,
    "BYTEWAX_PROCESSES": None,
    "BYTEWAX_PROCESS_ID": None,
    "BYTEWAX_ADDRESSES": None,
    # Renamed by a search and replace, they look right and are not read.
    "AIOWAX_WORKERS_PER_PROCESS": ENV_WORKERS,
    "AIOWAX_RECOVERY_BACKUP_INTERVAL": ENV_BACKUP_INTERVAL,
}


def _unread_env_warnings(environ: Mapping[str, str]) -> list[str]:
    """Warnings for Bytewax's variables (and their renamed look-alikes) that are set."""
    warnings = []
    for variable, ours in _BYTEWAX_ENV.items():
        if not environ.get(variable):
            continue
        if ours is None:
            instead = "a cluster of processes runs on Kafka here (see --kafka-cluster)"
        else:
            instead = f"set {ours} instead"
        warnings.append(f"warning: {variable} is set but not read; {instead}")
    return warnings


def _apply_env_defaults(
    parser: argparse.ArgumentParser, options: argparse.Namespace, environ: Mapping[str, str]
) -> set[str]:
    """Fill unset options from the environment; return the ones filled so."""
    from_env: set[str] = set()
    for dest, variable, convert in _ENV_DEFAULTS:
        raw = environ.get(variable, "")
        # Blank counts as unset too (`--help` says so): `VAR=" "` in a unit file.
        if getattr(options, dest) is not None or not raw.strip():
            continue
        try:
            setattr(options, dest, convert(raw))
        except argparse.ArgumentTypeError as exc:
            parser.error(f"environment variable {variable}: {exc}")
        from_env.add(dest)
    return from_env


def _or_default(value: timedelta | None, default: timedelta) -> timedelta:
    # Not ``value or default``: zero is a value.
    return default if value is None else value


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
    status: list[int],
    workers: int,
    epoch_interval: timedelta | None,
    recovery_config: RecoveryConfig | None,
    stop_timeout: timedelta,
    prog: str,
    cluster: Any,
    http: Any = None,
    progress_line: _progress.ProgressLine | None = None,
) -> None:
    if inspect.isawaitable(obj):
        try:
            obj = await obj
        except Exception as exc:
            load_errors.append(factory_raised(target, exc))
            return
    try:
        flow = check_dataflow(obj, target)
    except FlowImportError as exc:
        load_errors.append(exc)
        return
    companions: list[Companion] = []
    if http is not None:
        companions.append(_http_cli.live_page(http, flow, prog))
    if progress_line is not None:
        companions.append(_progress.progress(progress_line))
    status.append(
        await _run_until_stopped(
            flow,
            workers=workers,
            epoch_interval=epoch_interval,
            recovery_config=recovery_config,
            stop_timeout=stop_timeout,
            prog=prog,
            cluster=cluster,
            companions=companions,
        )
    )


def main(argv: Sequence[str] | None = None, *, prog: str | None = None) -> int:
    """Run the command line; return the exit status.

    This is the ``aiowax`` console script and ``python -m aiowax``.

    Args:
        argv: The arguments, without the program name (default:
            ``sys.argv[1:]``).
        prog: The program name for usage and messages (default: from
            ``sys.argv[0]``).

    Returns:
        0 when the flow's input ended or SIGTERM/SIGINT stopped it
            gracefully, 1 when the flow raised (after printing its traceback to
            stderr), 2 when the flow could not be loaded or the recovery
            directory cannot be resumed from (after printing why), 128 + the
            signal's number when a stop was aborted (by ``--stop-timeout`` or a
            second signal), 130 on a `KeyboardInterrupt` before the flow started.

    Raises:
        SystemExit: For ``--help``, ``--version`` and usage errors, as
            `argparse` does (status 0 or 2).
    """
    _reopen_closed_standard_fds()
    _cluster_cli.follow_supervisor(os.environ)
    parser = build_parser(prog)
    try:
        options = parser.parse_args(argv)
        from_env = _apply_env_defaults(parser, options, os.environ)
        for warning in _unread_env_warnings(os.environ):
            print(f"{parser.prog}: {warning}", file=sys.stderr)
        recovery_config = _recovery_config(parser, options, from_env)
        cluster = _cluster_cli.cluster_of(parser, options, from_env)
        http = _http_cli.listener_of(parser, options)
        if cluster is not None and (options.processes or 1) > 1:
            args = sys.argv[1:] if argv is None else list(argv)
            return _cluster_cli.supervise(
                _cluster_cli.without_processes(args), options.processes, parser.prog
            )
        try:
            target = parse_import_str(options.import_str)
        except FlowImportError as exc:
            parser.error(exc.message)
        import_from_cwd()
        load_errors: list[FlowImportError] = []
        status: list[int] = []
        try:
            obj = load_target(target)
            if not inspect.isawaitable(obj):
                obj = check_dataflow(obj, target)
        except FlowImportError as exc:
            return _error(parser.prog, exc.message, exc.details)
        # After the flow's import: its module may have set logging up itself.
        # The copies that -p starts share one terminal: no line for them.
        progress_line = None
        if sys.stderr.isatty() and _cluster_cli.ENV_PROCESS_INDEX not in os.environ:
            progress_line = _progress.ProgressLine(sys.stderr)
        _progress.configure_logging(options.log_level, sys.stderr, progress_line)
        with _progress.erasing(progress_line):
            try:
                run_sync(
                    _load_and_run(
                        target,
                        obj,
                        load_errors,
                        status,
                        options.workers or 1,
                        options.snapshot_interval,
                        recovery_config,
                        _or_default(options.stop_timeout, DEFAULT_STOP_TIMEOUT),
                        parser.prog,
                        cluster,
                        http,
                        progress_line,
                    )
                )
            except Exception as exc:
                if _is_recovery_setup_error(exc, recovery_config):
                    # The directory cannot be resumed from: nothing of the flow ran.
                    assert recovery_config is not None
                    shown = repr(str(recovery_config.db_dir))
                    message = f"cannot resume from recovery directory {shown}: {exc}"
                    return _error(parser.prog, message)
                if isinstance(exc, ClusterError) and exc.before_run:
                    # The copy refused to start: nothing of the flow ran.
                    return _error(parser.prog, str(exc))
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
        return status[0] if status else 0
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _reopen_closed_standard_fds() -> None:
    """Put ``/dev/null`` on whichever of fds 0, 1 and 2 a parent left closed.

    A closed one is taken by the next file the process opens, and libuv
    (under uvloop) aborts the process when it closes a handle on fd 0-2
    (exit 134 after a flow that ran fine); and with fd 2 closed Python sets
    `sys.stderr` to None, so nothing, not even an error, could be said.
    """
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)  # the lowest free fd: this one
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            if getattr(sys, name) is None:
                setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115


def _is_recovery_setup_error(exc: Exception, config: RecoveryConfig | None) -> bool:
    """Whether ``exc`` says the recovery directory cannot be opened.

    That is a `RecoveryError` that aiowax itself raised (missing or
    inconsistent partition files); one that user code raises inside a step
    is a failure of the flow like any other.
    """
    return config is not None and isinstance(exc, RecoveryError) and raised_by_aiowax(exc)


def _flush_stdout() -> bool:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
        return False
    except (OSError, ValueError):
        pass
    return True
