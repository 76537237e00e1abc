"""The command line: the import-string parser, then ``python -m aiowax`` itself.

The parser and the option handling are tested in-process (cheap); the CLI is
run end to end in subprocesses for the main paths and each kind of error.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import aiowax
from aiowax import _cli
from aiowax import _cli_cluster as _cluster_cli
from aiowax._cli import main
from aiowax._importer import FlowImportError, ImportTarget, parse_import_str
from aiowax.recovery import RecoveryConfig, init_db_dir

# -- the import-string parser --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("flows", ImportTarget("flows", module="flows")),
        ("pkg.sub", ImportTarget("pkg.sub", module="pkg.sub")),
        ("pkg.sub:my_flow", ImportTarget("pkg.sub:my_flow", module="pkg.sub", attr="my_flow")),
        ("m:get()", ImportTarget("m:get()", module="m", attr="get", call=True)),
        (
            "m:get('a:b', 2, -1.5, None, True, (1, 2), [3], {'k': {1}}, b'x', key='v')",
            ImportTarget(
                "m:get('a:b', 2, -1.5, None, True, (1, 2), [3], {'k': {1}}, b'x', key='v')",
                module="m",
                attr="get",
                call=True,
                args=("a:b", 2, -1.5, None, True, (1, 2), [3], {"k": {1}}, b"x"),
                kwargs={"key": "v"},
            ),
        ),
        (
            "m: get_flow ( n = 1 ) ",
            ImportTarget("m: get_flow ( n = 1 ) ", "m", None, "get_flow", True, (), {"n": 1}),
        ),
        ("módulo:flüss", ImportTarget("módulo:flüss", module="módulo", attr="flüss")),
        ("flows.py", ImportTarget("flows.py", path=Path("flows.py"))),
        ("pkg.py:flow2", ImportTarget("pkg.py:flow2", path=Path("pkg.py"), attr="flow2")),
        ("dir/f.py:flow", ImportTarget("dir/f.py:flow", path=Path("dir/f.py"))),
        (
            "a.py/f.py:get('x.py:y')",
            ImportTarget(
                "a.py/f.py:get('x.py:y')",
                path=Path("a.py/f.py"),
                attr="get",
                call=True,
                args=("x.py:y",),
            ),
        ),
        (
            r"C:\dir\f.py:get()",
            ImportTarget(r"C:\dir\f.py:get()", path=Path(r"C:\dir\f.py"), attr="get", call=True),
        ),
        ("/abs/f.py", ImportTarget("/abs/f.py", path=Path("/abs/f.py"))),
    ],
)
def test_parse_valid(text: str, expected: ImportTarget) -> None:
    assert parse_import_str(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("mod:", "no attribute name after ':'"),
        ("mod:  ", "no attribute name after ':'"),
        ("mod:1x", "not an attribute name or a factory call"),
        ("mod:f(x=)", "not an attribute name or a factory call"),
        ("mod:f(x=1, x=2)", "keyword argument 'x' is repeated"),
        ("mod:f(", "not an attribute name or a factory call"),
        ("mod:class", "not an attribute name or a factory call"),
        ("mod:a.b", "not an attribute name or a factory call"),
        ("mod:42", "not an attribute name or a factory call"),
        ("mod:None", "not an attribute name or a factory call"),
        ("mod:lambda: 1", "not an attribute name or a factory call"),
        ("mod:f()()", "the factory must be a plain name"),
        ("mod:obj.get()", "the factory must be a plain name"),
        ("mod:f(x)", "), got 'x'"),
        ("mod:f(1 + x)", "must be Python literals"),
        ("mod:f(n=open('/etc/passwd'))", "got \"open('/etc/passwd')\""),
        ("mod:f(__import__('os').system('false'))", "must be Python literals"),
        ("mod:f(lambda: 0)", "must be Python literals"),
        ("mod:f([x for x in 'ab'])", "must be Python literals"),
        ("mod:f(*[1])", "*args cannot be used"),
        ("mod:f(**{'a': 1})", "**kwargs cannot be used"),
        (".relative", "neither a dotted module name nor a .py path"),
        ("pkg..mod", "neither a dotted module name nor a .py path"),
        ("examples/foo", "neither a dotted module name nor a .py path"),
        ("mod name", "neither a dotted module name nor a .py path"),
    ],
)
def test_parse_invalid(text: str, reason: str) -> None:
    with pytest.raises(FlowImportError) as info:
        parse_import_str(text)
    message = str(info.value)
    assert message.startswith(f"invalid import string {text!r}: ")
    assert reason in message
    assert info.value.details is None


def test_expression_normalizes_the_attribute_part() -> None:
    assert parse_import_str("m").expression == "flow"
    assert parse_import_str("m:f( 'a',n = 2 )").expression == "f('a', n=2)"


def test_console_script_is_main() -> None:
    from importlib.metadata import entry_points

    scripts = entry_points(group="console_scripts", name="aiowax")
    if not scripts:
        pytest.skip("aiowax is not installed: no console script metadata")
    (script,) = scripts
    assert script.value == "aiowax._cli:main"
    assert script.load() is main


# -- flow modules used by both the in-process and the subprocess tests --------

FLOWS = """
import asyncio
import time

from aiowax.connectors.stdio import StdOutSink
from aiowax.dataflow import Dataflow
from aiowax.inputs import DynamicSource, StatelessSourcePartition
from aiowax.outputs import DynamicSink, StatelessSinkPartition
from aiowax.testing import TestingSource


def make(prefix, n=3):
    flow = Dataflow()
    flow.input("inp", TestingSource(range(n)))
    flow.map("label", lambda x: f"{prefix}{x}")
    flow.output("out", StdOutSink())
    return flow


flow = make("x")
other = make("o", 2)
NUMBER = 42


def not_a_flow():
    return [1, 2]


def explode():
    raise RuntimeError("factory broke")


async def make_async(prefix):
    await asyncio.sleep(0)
    return make(prefix, 2)


async def async_explode():
    await asyncio.sleep(0)
    raise RuntimeError("async factory broke")


async def async_not_a_flow():
    return "nope"


def _check(x):
    if x == 2:
        raise ValueError(f"bad item {x}")
    return x


failing = Dataflow()
failing.input("inp", TestingSource(range(5)))
failing.map("check", _check)
failing.output("out", StdOutSink())


class _Part(StatelessSinkPartition):
    def write_batch(self, items):
        pass


class WorkerSink(DynamicSink):
    def build(self, worker_index, worker_count):
        print(f"built {worker_index}/{worker_count}", flush=True)
        return _Part()


epochs = Dataflow()
epochs.input("inp", TestingSource(["a", "b", "c"]))
epochs.inspect_epoch(lambda epoch, item: print(f"epoch {epoch} {item}", flush=True))
epochs.output("out", WorkerSink())


async def _pause(x):
    await asyncio.sleep(0.02)
    return x


_pool = None


def _square(x):
    return x * x


def _shrug(signum, frame):
    pass


def _survive_ctrl_c():
    # A pool worker that dies of the SIGINT the whole group gets loses the
    # task it held, and the step's apply() then waits for ever: workers
    # keep a Python handler (not SIG_IGN, which would not run the C handler
    # that wrote to an inherited wakeup fd: what the test is about).
    import signal

    signal.signal(signal.SIGINT, _shrug)


def _through_a_forked_pool(x):
    # What a user's step may do: multiprocessing's fork start method.
    global _pool
    if _pool is None:
        import multiprocessing

        _pool = multiprocessing.get_context("fork").Pool(2, initializer=_survive_ctrl_c)
    return _pool.apply(_square, (x,))


def forking():
    import itertools

    flow = Dataflow()
    flow.input("inp", TestingSource(itertools.count()))
    flow.map("pause", _pause)
    flow.map("square", _through_a_forked_pool)
    flow.output("out", StdOutSink())
    return flow


def _sleep(started):
    started.set()
    time.sleep(60)


def _terminate_a_forked_child(wait):
    # What Pool.terminate() does to its workers: SIGTERM, then a join;
    # without waiting, the signal may come before the child's fork hook ran.
    import multiprocessing

    context = multiprocessing.get_context("fork")
    started = context.Event()
    child = context.Process(target=_sleep, args=(started,))
    child.start()
    if wait:
        started.wait(10)
    child.terminate()
    child.join(10)
    if child.exitcode is None:
        child.kill()
        child.join()
        return "still running"
    return child.exitcode


def terminating(wait):
    flow = Dataflow()
    flow.input("inp", TestingSource([wait]))
    flow.map("terminate", _terminate_a_forked_child)
    flow.output("out", StdOutSink())
    return flow


def endless():
    import itertools

    flow = Dataflow()
    flow.input("inp", TestingSource(itertools.count()))
    flow.map("pause", _pause)
    flow.output("out", StdOutSink())
    return flow


class _Tick(StatelessSourcePartition):
    def __init__(self):
        self.n = 0

    async def next_batch(self, sched):
        # A read that waits: nothing is gathered, each item goes alone.
        await asyncio.sleep(0.02)
        self.n += 1
        return [self.n - 1]


class Ticks(DynamicSource):
    def build(self, now, worker_index, worker_count):
        return _Tick()


def ticking():
    # One item a tick, each line a write of its own: copies sharing a pipe
    # do not cut each other's lines.
    flow = Dataflow()
    flow.input("inp", Ticks())
    flow.output("out", StdOutSink())
    return flow


async def _hang(x):
    print(x, flush=True)
    await asyncio.sleep(3600)


def stuck():
    # Its mapper never returns: a graceful stop cannot end.
    import itertools

    flow = Dataflow()
    flow.input("inp", TestingSource(itertools.count(), batch_size=1))
    flow.map("hang", _hang)
    flow.output("out", StdOutSink())
    return flow


many = Dataflow()
many.input("inp", TestingSource(range(300_000), batch_size=1000))
many.output("out", StdOutSink())


def _running_total(total, value):
    total += value
    return total, f"{'odd' if value % 2 else 'even'} {value} {total}"


def _parity(x):
    return ("odd" if x % 2 else "even", x)


# Three executions: each clean end (EOF) lets the next run continue after it.
counting = Dataflow()
counting.input(
    "inp",
    TestingSource(
        [1, 2, 3, 4, TestingSource.EOF(), 5, 6, 7, TestingSource.EOF(), 8, 9], batch_size=2
    ),
)
counting.map("parity", _parity)
counting.stateful_map("total", lambda: 0, _running_total)
counting.map("show", lambda kv: kv[1])
counting.output("out", StdOutSink())


async def _crash_once(x):
    # Crashes the first run only (the flag file outlives the process), a
    # while after the items before it went through, so their epochs are
    # committed by then.
    import os

    flag = os.environ["CRASH_FLAG"]
    if x == 13 and not os.path.exists(flag):
        open(flag, "w").close()
        await asyncio.sleep(0.3)
        raise RuntimeError("crash once")
    return x


crashy = Dataflow()
crashy.input("inp", TestingSource(range(1, 21)))
crashy.map("crash", _crash_once)
crashy.map("parity", _parity)
crashy.stateful_map("total", lambda: 0, _running_total)
crashy.map("show", lambda kv: kv[1])
crashy.output("out", StdOutSink())


def _raise_recovery_error(x):
    from aiowax.recovery import NoPartitionsError

    raise NoPartitionsError("raised by the user's code")


user_recovery_error = Dataflow()
user_recovery_error.input("inp", TestingSource([1]))
user_recovery_error.map("bad", _raise_recovery_error)
user_recovery_error.output("out", StdOutSink())
"""

FILES = {
    "flows.py": FLOWS,
    # Its bug: a missing dependency, not a missing module of the import string.
    "broken.py": "import json\nimport nosuch_dependency_xyz\nflow = None\n",
    "syntax_error.py": "flow = (\n",
    # A script beside a helper, as in 'python sub/script.py'.
    "sub/helper.py": "PREFIX = 'h'\n",
    "sub/script.py": "from helper import PREFIX\nfrom flows import make\nflow = make(PREFIX, 2)\n",
    # A package, so pkg/mod.py is imported as pkg.mod and relative imports work.
    "pkg/__init__.py": "",
    "pkg/base.py": "from flows import make\n",
    "pkg/mod.py": "from .base import make\nflow = make('p', 1)\n",
    "lazy.py": "def __getattr__(name):\n    raise LookupError(name)\n",
    # A file whose name is already taken by a module imported before it.
    "shadow/argparse.py": "flow = None\n",
    # A dot in a file's stem: it cannot be a module name ('x' not found, it said).
    "x.y.py": "flow = None\n",
    # A dash is fine: importlib takes the name.
    "my-flow.py": "from flows import make\nflow = make('d', 1)\n",
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("project")
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


# -- in-process: options, wiring, and the rarer load errors -------------------


@pytest.fixture
def inproc(project: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run `main` in this process from ``project``, then forget its imports."""
    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", list(sys.path))
    for variable in [v for v in os.environ if v.startswith("AIOWAX_")]:
        monkeypatch.delenv(variable)
    importlib.invalidate_caches()
    before = set(sys.modules)
    yield project
    for name in set(sys.modules) - before:
        del sys.modules[name]


def _usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv, prog="aiowax")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: aiowax ")
    return err


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["-w", "0", "flows"], {}, "argument -w/--workers: must be an integer >= 1, got '0'"),
        (
            ["--workers-per-process", "0", "flows"],
            {},
            "argument --workers-per-process: must be an integer >= 1, got '0'",
        ),
        (["--workers", "two", "flows"], {}, "must be an integer >= 1, got 'two'"),
        # Ate memory until the OOM killer came, saying nothing.
        (
            ["-w", "99999999999", "flows"],
            {},
            "argument -w/--workers: must be at most 1024, got '99999999999'",
        ),
        (["flows"], {"AIOWAX_WORKERS": "5000"}, "AIOWAX_WORKERS: must be at most 1024"),
        # Would have forked 100000 copies.
        (
            ["--kafka-cluster", "k:9092", "--app-id", "a", "-p", "100000", "flows"],
            {},
            "argument -p/--processes: must be at most 256, got '100000' (for more copies, "
            "start them on more machines",
        ),
        (["flows"], {"AIOWAX_PROCESSES": "257"}, "AIOWAX_PROCESSES: must be at most 256"),
        # int() takes other scripts' digits; a count here is ASCII.
        (["-w", "\u0663", "flows"], {}, "must be an integer >= 1, got '\u0663'"),
        (
            ["-s", "-1", "flows"],
            {},
            "argument -s/--snapshot-interval: must be a number of seconds >= 0",
        ),
        (["-s", "nan", "flows"], {}, "must be a number of seconds >= 0, got 'nan'"),
        (["-s", "inf", "flows"], {}, "must be a number of seconds >= 0, got 'inf'"),
        (["-s", "1e30", "flows"], {}, "is too large"),
        (["-b", "x", "flows"], {}, "argument -b/--backup-interval: must be a number"),
        (
            ["--stop-timeout", "-1", "flows"],
            {},
            "argument --stop-timeout: must be a number of seconds >= 0",
        ),
        (
            ["flows"],
            {"AIOWAX_STOP_TIMEOUT": "later"},
            "environment variable AIOWAX_STOP_TIMEOUT: ",
        ),
        (
            ["flows"],
            {"AIOWAX_WORKERS": "-3"},
            "environment variable AIOWAX_WORKERS: must be an integer",
        ),
        (
            ["flows"],
            {"AIOWAX_SNAPSHOT_INTERVAL": "soon"},
            "environment variable AIOWAX_SNAPSHOT_INTERVAL: ",
        ),
        (
            ["flows"],
            {"AIOWAX_BACKUP_INTERVAL": "-1"},
            "environment variable AIOWAX_BACKUP_INTERVAL: ",
        ),
        (
            ["-r", "rec", "flows"],
            {},
            "-r/--recovery-directory: recovery directory 'rec' does not exist; create it "
            "and its partition files with 'python -m aiowax.recovery rec COUNT'",
        ),
        (
            ["flows"],
            {"AIOWAX_RECOVERY_DIRECTORY": "rec"},
            "environment variable AIOWAX_RECOVERY_DIRECTORY: recovery directory 'rec' "
            "does not exist",
        ),
        (
            ["-r", "flows.py", "flows"],
            {},
            "recovery directory 'flows.py' is not a directory",
        ),
        (
            # A directory without partition files (only modules in it).
            ["--recovery-directory=sub", "flows"],
            {},
            "recovery directory 'sub' holds no partition files; create them with "
            "'python -m aiowax.recovery sub COUNT'",
        ),
        (["-r", "", "flows"], {}, "argument -r/--recovery-directory: must not be empty"),
        (
            ["-b", "5", "flows"],
            {},
            "-b/--backup-interval only applies with -r/--recovery-directory",
        ),
        (["-w", "2"], {}, "the following arguments are required: IMPORT_STR"),
        (["--work", "2", "flows"], {}, "unrecognized arguments: --work"),
        (["flows:f(x)"], {}, "invalid import string 'flows:f(x)'"),
    ],
)
def test_usage_errors(
    inproc: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
    message: str,
) -> None:
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    err = _usage_error(argv, capsys)
    assert "aiowax: error: " in err
    assert message in err
    assert "flows" not in sys.modules  # nothing imported on a usage error


class _RunSpy:
    """Stands in for `_cli._run_until_stopped`: records its arguments."""

    def __init__(self, status: int = 0) -> None:
        self.calls: list[dict[str, Any]] = []
        self.status = status

    async def __call__(self, flow: object, **kwargs: Any) -> int:
        self.calls.append({"flow": flow, **kwargs})
        return self.status


@pytest.mark.parametrize(
    ("argv", "env", "workers", "interval", "stop_timeout"),
    [
        (["flows"], {}, 1, None, 25),
        (["-w", "3", "-s", "0.5", "flows"], {}, 3, timedelta(seconds=0.5), 25),
        (
            ["flows"],
            {"AIOWAX_WORKERS": "4", "AIOWAX_SNAPSHOT_INTERVAL": "0", "AIOWAX_STOP_TIMEOUT": "5"},
            4,
            timedelta(0),
            5,
        ),
        # The command line wins; empty variables count as unset.
        (
            ["--workers=2", "--stop-timeout=0", "flows"],
            {"AIOWAX_WORKERS": "4", "AIOWAX_SNAPSHOT_INTERVAL": "", "AIOWAX_STOP_TIMEOUT": "9"},
            2,
            None,
            0,
        ),
        (["--stop-timeout", "0.25", "flows"], {"AIOWAX_STOP_TIMEOUT": ""}, 1, None, 0.25),
        # Blank ones too (AIOWAX_HTTP=" " was a usage error).
        (["flows"], {"AIOWAX_HTTP": " ", "AIOWAX_SNAPSHOT_INTERVAL": "\t"}, 1, None, 25),
        # Without -r, a backup interval from the environment is only checked.
        (["flows"], {"AIOWAX_BACKUP_INTERVAL": "30"}, 1, None, 25),
    ],
)
def test_options_reach_run(
    inproc: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
    workers: int,
    interval: timedelta | None,
    stop_timeout: float,
) -> None:
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    spy = _RunSpy()
    monkeypatch.setattr(_cli, "_run_until_stopped", spy)
    assert main(argv) == 0
    (call,) = spy.calls
    assert call["flow"] is sys.modules["flows"].flow
    assert call["workers"] == workers
    assert call["epoch_interval"] == interval
    assert call["recovery_config"] is None
    assert call["stop_timeout"] == timedelta(seconds=stop_timeout)


def test_bytewax_0172s_long_workers_flag_is_taken_and_its_variables_are_named(
    inproc: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A migrated script's --workers-per-process was "unrecognized", and
    # BYTEWAX_* variables (or AIOWAX_WORKERS_PER_PROCESS, after a search and
    # replace) were ignored without a word: the flow ran with one worker.
    monkeypatch.setenv("BYTEWAX_WORKERS_PER_PROCESS", "2")
    monkeypatch.setenv("AIOWAX_WORKERS_PER_PROCESS", "2")
    monkeypatch.setenv("BYTEWAX_ADDRESSES", "a:1;b:2")
    spy = _RunSpy()
    monkeypatch.setattr(_cli, "_run_until_stopped", spy)
    assert main(["--workers-per-process", "3", "flows"]) == 0
    (call,) = spy.calls
    assert call["workers"] == 3
    err = capsys.readouterr().err
    assert "BYTEWAX_WORKERS_PER_PROCESS is set but not read; set AIOWAX_WORKERS instead" in err
    assert "AIOWAX_WORKERS_PER_PROCESS is set but not read; set AIOWAX_WORKERS instead" in err
    assert "BYTEWAX_ADDRESSES is set but not read; a cluster of processes runs on Kafka" in err


def test_the_status_of_an_aborted_stop_is_the_exit_status(
    inproc: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_cli, "_run_until_stopped", _RunSpy(status=143))
    assert main(["flows"]) == 143


def test_an_in_process_run_puts_the_signal_handlers_back(
    inproc: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    assert main(["flows"]) == 0
    assert capsys.readouterr().out == "x0\nx1\nx2\n"
    assert {sig: signal.getsignal(sig) for sig in before} == before


@pytest.fixture
def recovery_dir(tmp_path: Path) -> Path:
    """An initialised recovery directory with two partition files."""
    path = tmp_path / "recovery"
    init_db_dir(path, 2)
    return path


@pytest.mark.parametrize(
    ("argv", "env", "backup"),
    [
        (["-r", "{dir}", "flows"], {}, None),
        (["-r", "{dir}", "-b", "30", "flows"], {}, timedelta(seconds=30)),
        (["--recovery-directory={dir}", "--backup-interval=0", "flows"], {}, timedelta(0)),
        (
            ["flows"],
            {"AIOWAX_RECOVERY_DIRECTORY": "{dir}", "AIOWAX_BACKUP_INTERVAL": "1.5"},
            timedelta(seconds=1.5),
        ),
        # The command line wins over the environment.
        (
            ["-r", "{dir}", "-b", "2", "flows"],
            {"AIOWAX_RECOVERY_DIRECTORY": "/nonexistent", "AIOWAX_BACKUP_INTERVAL": "9"},
            timedelta(seconds=2),
        ),
        # A backup interval from the command line with the directory from the environment.
        (["-b", "7", "flows"], {"AIOWAX_RECOVERY_DIRECTORY": "{dir}"}, timedelta(seconds=7)),
    ],
)
def test_recovery_options_reach_run(
    inproc: Path,
    recovery_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
    backup: timedelta | None,
) -> None:
    for variable, value in env.items():
        monkeypatch.setenv(variable, value.format(dir=recovery_dir))
    spy = _RunSpy()
    monkeypatch.setattr(_cli, "_run_until_stopped", spy)
    assert main([arg.format(dir=recovery_dir) for arg in argv]) == 0
    (call,) = spy.calls
    assert call["recovery_config"] == RecoveryConfig(recovery_dir, backup_interval=backup)
    assert call["recovery_config"].backup_interval == backup
    assert call["workers"] == 1


def test_recovery_runs_in_process(
    inproc: Path, recovery_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each run continues after the clean end of the previous one, totals carried over.
    argv = ["-r", str(recovery_dir), "-s", "0", "flows:counting"]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == ["odd 1 1", "even 2 2", "odd 3 4", "even 4 6"]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == ["odd 5 9", "even 6 12", "odd 7 16"]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines() == ["even 8 20", "odd 9 25"]
    assert main(argv) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "lacks partition files part-1.sqlite3 (of 2)"),
        ("count", "disagree on their count"),
    ],
)
def test_recovery_directory_unusable_exits_2(
    inproc: Path,
    recovery_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    damage: str,
    message: str,
) -> None:
    part = recovery_dir / "part-1.sqlite3"
    part.unlink()
    if damage == "count":
        other = tmp_path / "other"
        init_db_dir(other, 3)
        (other / "part-1.sqlite3").rename(part)
    status = main(["-r", str(recovery_dir), "flows"], prog="aiowax")
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""  # the flow did not run
    assert captured.err.startswith(
        f"aiowax: error: cannot resume from recovery directory {str(recovery_dir)!r}: "
    )
    assert message in captured.err
    assert "Traceback" not in captured.err


def test_recovery_error_of_user_code_is_a_flow_failure(
    inproc: Path, recovery_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["-r", str(recovery_dir), "flows:user_recovery_error"], prog="aiowax")
    err = capsys.readouterr().err
    assert status == 1
    assert err.startswith("Traceback (most recent call last):\n")
    assert "NoPartitionsError: raised by the user's code" in err
    assert "step 'bad'" in err


@pytest.mark.parametrize(
    ("import_str", "out"),
    [
        ("pkg.mod", "p0\n"),
        ("pkg/mod.py", "p0\n"),
        ("flows:make_async('as')", "as0\nas1\n"),
        ("sub/script.py", "h0\nh1\n"),
        ("my-flow.py", "d0\n"),
    ],
)
def test_runs_in_process(
    inproc: Path, capsys: pytest.CaptureFixture[str], import_str: str, out: str
) -> None:
    assert main([import_str]) == 0
    assert capsys.readouterr().out == out


def test_cwd_is_made_importable(inproc: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path[:] = [p for p in sys.path if p not in ("", str(inproc))]
    assert main(["flows:other"]) == 0
    assert capsys.readouterr().out == "o0\no1\n"
    assert sys.path[0] == str(inproc)


@pytest.mark.parametrize(
    ("import_str", "message", "traceback_has"),
    [
        ("pkg.nosuch", "module 'pkg.nosuch' not found", None),
        ("nosuchpkg.mod", "module 'nosuchpkg.mod' not found (no module named 'nosuchpkg')", None),
        ("flows.sub", "module 'flows.sub' not found ('flows' is not a package)", None),
        ("flows:NUMBER()", "'NUMBER' in module 'flows' is not callable, got int 42", None),
        (
            "flows:make(1, 2, 3)",
            "cannot be called as make(1, 2, 3): too many positional arguments "
            "(its signature is make(prefix, n=3))",
            None,
        ),
        ("flows:make(prefix='a', bad=1)", "unexpected keyword argument 'bad'", None),
        (
            "flows:make",
            "attribute 'make' is function 'make', not an aiowax.dataflow.Dataflow; "
            "to call it, pass 'flows:make()'",
            None,
        ),
        (
            "flows:async_explode()",
            "factory async_explode() raised RuntimeError",
            "async factory broke",
        ),
        ("flows:async_not_a_flow()", "factory async_not_a_flow() returned str 'nope'", None),
        (
            "pkg",
            "module 'pkg' has no attribute 'flow' (the default; name another one with "
            "'MODULE:ATTR')",
            None,
        ),
        (
            "pkg.mod:nope",
            "module 'pkg.mod' has no attribute 'nope'; its Dataflow attributes are: flow",
            None,
        ),
        (
            "lazy",
            "getting attribute 'flow' of module 'lazy' raised LookupError",
            "LookupError: flow",
        ),
        ("syntax_error", "importing module 'syntax_error' raised SyntaxError", "was never closed"),
        # A directory without __init__.py: a namespace package, without a flow.
        ("sub", "module 'sub' has no attribute 'flow'", None),
        ("shadow/argparse.py", "but that name already belongs to", None),
        ("sub/", "neither a dotted module name nor a .py path", None),
        ("sub/helper.py/x.py", "file 'sub/helper.py/x.py' not found", None),
        ("pkg/__init__.py", "module 'pkg' has no attribute 'flow'", None),
        (
            "x.y.py",
            "'x.y.py' cannot be imported as module 'x.y'; rename it (a dot in a name "
            "reads as a package)",
            None,
        ),
    ],
)
def test_load_errors_in_process(
    inproc: Path,
    capsys: pytest.CaptureFixture[str],
    import_str: str,
    message: str,
    traceback_has: str | None,
) -> None:
    try:
        status: int | str | None = main([import_str], prog="aiowax")
    except SystemExit as exc:  # syntax errors are usage errors
        status = exc.code
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert (
        f"cannot load {import_str!r}: " in captured.err
        or f"invalid import string {import_str!r}" in captured.err
    )
    assert message in captured.err
    if traceback_has is None:
        assert "Traceback" not in captured.err
    else:
        assert traceback_has in captured.err
        assert "importlib" not in captured.err
        assert "_cli.py" not in captured.err


# -- end to end, in a subprocess -----------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOWAX_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def _command(cwd: Path, cmd: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=60, check=False
    )


def aiowax_cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return _command(cwd, [sys.executable, "-m", "aiowax", *args], **env)


@pytest.mark.parametrize(
    ("args", "env", "out"),
    [
        # The current directory is importable; 'flow' is the default attribute.
        (["flows"], {}, "x0\nx1\nx2\n"),
        # A factory with literal arguments, one holding a ':'.
        (["flows:make('a:', n=2)"], {}, "a:0\na:1\n"),
        # A file: its directory goes on sys.path, so it imports its neighbours.
        (["sub/script.py:flow"], {}, "h0\nh1\n"),
        # Workers from the environment, every batch its own epoch with -s 0.
        (
            ["-s", "0", "flows:epochs"],
            {"AIOWAX_WORKERS": "2"},
            "built 0/2\nbuilt 1/2\nepoch 1 a\nepoch 2 b\nepoch 3 c\n",
        ),
    ],
)
def test_cli_runs_flow(project: Path, args: list[str], env: dict[str, str], out: str) -> None:
    result = aiowax_cli(project, *args, **env)
    assert (result.returncode, result.stderr) == (0, "")
    assert sorted(result.stdout.splitlines()) == sorted(out.splitlines())


def test_python_m_aiowax_run_is_the_command_line(project: Path) -> None:
    # Bytewax's ``python -m bytewax.run``, migrated by its import root, was
    # "No module named aiowax.run" (exit 1): Dockerfiles and unit files
    # changed more than the import root.
    result = _command(
        project,
        [sys.executable, "-m", "aiowax.run", "-s", "0", "flows:make('r', n=3)"],
        AIOWAX_WORKERS="2",
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert sorted(result.stdout.splitlines()) == ["r0", "r1", "r2"]
    usage = _command(project, [sys.executable, "-m", "aiowax.run", "flows", "-i", "1"])
    assert usage.returncode == 2
    assert "python -m aiowax.run: error: -i/--process-id is Bytewax's" in usage.stderr


@pytest.mark.parametrize(
    ("redirect", "out"),
    [("<&-", "x0\nx1\nx2\n"), ("2>&-", "x0\nx1\nx2\n"), (">&-", "")],
    ids=["stdin", "stderr", "stdout"],
)
def test_a_closed_standard_fd_is_taken_for_dev_null(project: Path, redirect: str, out: str) -> None:
    # A parent that closed fd 0 or 1 (a daemon manager, `<&-`): the flow ran,
    # then libuv aborted the process closing its handle on that fd (exit 134).
    # With fd 2 closed, sys.stderr was None: the CLI crashed before the flow
    # ran, with exit 1 and not a word.
    result = _command(
        project, ["sh", "-c", f'exec "$0" -m aiowax flows {redirect}', sys.executable]
    )
    assert (result.returncode, result.stdout) == (0, out), result.stderr


def test_importing_aiowax_run_by_name_keeps_the_run_function() -> None:
    # A tool walking the package (``import aiowax.run``) would otherwise
    # bind the command's module over the function ``aiowax.run``.
    code = (
        "import importlib, aiowax, aiowax._run\n"
        "module = importlib.import_module('aiowax.run')\n"
        "import aiowax.run\n"
        "from aiowax import run\n"
        "assert module is aiowax.run is run is aiowax._run.run, (module, aiowax.run, run)\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "ok\n", "")


def test_cli_flow_error_prints_traceback_and_exits_1(project: Path) -> None:
    result = aiowax_cli(project, "flows:failing")
    assert result.returncode == 1
    assert result.stdout == "0\n1\n"
    err = result.stderr
    assert err.startswith("Traceback (most recent call last):\n")
    assert 'flows.py", line' in err
    assert "ValueError: bad item 2" in err
    assert "step 'check'" in err  # the note the engine adds
    assert "_cli.py" not in err  # the frames leading to the user's code are cut


def test_cli_help(project: Path) -> None:
    result = aiowax_cli(project, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: python -m aiowax ")
    for word in (
        "IMPORT_STR",
        "module:attr",
        "module:factory(args)",
        ".py",
        "--stop-timeout SECONDS",
        "AIOWAX_WORKERS",
        "AIOWAX_SNAPSHOT_INTERVAL",
        "AIOWAX_RECOVERY_DIRECTORY",
        "AIOWAX_BACKUP_INTERVAL",
        "AIOWAX_STOP_TIMEOUT",
        "python -m aiowax.recovery DIR COUNT",
        "--version",
        "SIGTERM",
        "130",
        "143",
    ):
        assert word in result.stdout, word
    # Python 3.13's argparse names the metavar once ("-w, --workers N"),
    # earlier ones after each flag ("-w N, --workers N").
    for short, long, metavar in (
        ("-w", "--workers", "N"),
        ("-s", "--snapshot-interval", "SECONDS"),
        ("-r", "--recovery-directory", "DIR"),
        ("-b", "--backup-interval", "SECONDS"),
    ):
        shown = (f"{short} {metavar}, {long} {metavar}", f"{short}, {long} {metavar}")
        assert any(form in result.stdout for form in shown), long


def test_cli_version(project: Path) -> None:
    result = aiowax_cli(project, "--version")
    assert (result.returncode, result.stdout) == (0, f"aiowax {aiowax.__version__}\n")


@pytest.mark.parametrize(
    ("args", "env", "message", "traceback_has"),
    [
        (
            ["nosuch_module_xyz"],
            {},
            "cannot load 'nosuch_module_xyz': module 'nosuch_module_xyz' not found",
            None,
        ),
        # An ImportError inside the user's module is their bug: show it.
        (
            ["broken:flow"],
            {},
            "cannot load 'broken:flow': importing module 'broken' raised ModuleNotFoundError",
            "No module named 'nosuch_dependency_xyz'",
        ),
        (
            ["flows:nope"],
            {},
            "cannot load 'flows:nope': module 'flows' has no attribute 'nope'",
            None,
        ),
        (
            ["flows:NUMBER"],
            {},
            "cannot load 'flows:NUMBER': attribute 'NUMBER' is int 42, "
            "not an aiowax.dataflow.Dataflow",
            None,
        ),
        (
            ["flows:not_a_flow()"],
            {},
            "cannot load 'flows:not_a_flow()': factory not_a_flow() returned list [1, 2], "
            "not an aiowax.dataflow.Dataflow",
            None,
        ),
        (
            ["flows:explode()"],
            {},
            "cannot load 'flows:explode()': factory explode() raised RuntimeError",
            "RuntimeError: factory broke",
        ),
        (
            ["missing.py:flow"],
            {},
            "cannot load 'missing.py:flow': file 'missing.py' not found",
            None,
        ),
        (["flows:1x"], {}, "invalid import string 'flows:1x': '1x' is not an attribute name", None),
        # A runaway import string was shown twice whole; once now, cut where
        # it is the prefix.
        (
            ["flows:" + "x" * 300],
            {},
            "cannot load 'flows:" + "x" * 71 + "..." + "x" * 78 + "': module 'flows' has no "
            "attribute '" + "x" * 300 + "'",
            None,
        ),
        (
            ["-r", "rec", "flows"],
            {},
            "-r/--recovery-directory: recovery directory 'rec' does not exist; "
            "create it and its partition files with 'python -m aiowax.recovery rec COUNT'",
            None,
        ),
        (
            ["flows"],
            {"AIOWAX_RECOVERY_DIRECTORY": "sub"},
            "environment variable AIOWAX_RECOVERY_DIRECTORY: recovery directory 'sub' "
            "holds no partition files; create them with 'python -m aiowax.recovery sub COUNT'",
            None,
        ),
        (
            ["flows"],
            {"AIOWAX_WORKERS": "zero"},
            "environment variable AIOWAX_WORKERS: must be an integer",
            None,
        ),
    ],
)
def test_cli_errors_exit_2(
    project: Path, args: list[str], env: dict[str, str], message: str, traceback_has: str | None
) -> None:
    result = aiowax_cli(project, *args, **env)
    assert result.returncode == 2
    assert result.stdout == ""
    assert f"python -m aiowax: error: {message}" in result.stderr
    if traceback_has is None:
        assert "Traceback" not in result.stderr
    else:
        assert "Traceback (most recent call last):" in result.stderr
        assert traceback_has in result.stderr
        assert "importlib" not in result.stderr


def test_cli_recovery_init_then_runs_continue(project: Path, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    init = subprocess.run(
        [sys.executable, "-m", "aiowax.recovery", str(rec), "2"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (init.returncode, init.stderr) == (0, "")
    assert sorted(p.name for p in rec.iterdir()) == ["part-0.sqlite3", "part-1.sqlite3"]

    def lines(result: subprocess.CompletedProcess[str]) -> list[str]:
        assert (result.returncode, result.stderr) == (0, "")
        return sorted(result.stdout.splitlines())

    first = aiowax_cli(project, "-r", str(rec), "-s", "0", "flows:counting")
    assert lines(first) == sorted(["odd 1 1", "even 2 2", "odd 3 4", "even 4 6"])
    # The directory from the environment, and another worker count: the
    # second run continues after the first with the totals carried over.
    second = aiowax_cli(project, "-w", "3", "flows:counting", AIOWAX_RECOVERY_DIRECTORY=str(rec))
    assert lines(second) == sorted(["odd 5 9", "even 6 12", "odd 7 16"])
    third = aiowax_cli(project, "-r", str(rec), "-b", "60", "-w", "2", "flows:counting")
    assert lines(third) == sorted(["even 8 20", "odd 9 25"])
    assert lines(aiowax_cli(project, "-r", str(rec), "flows:counting")) == []


def _expected_totals(items: range, start: dict[str, int] | None = None) -> list[str]:
    totals = dict(start or {"odd": 0, "even": 0})
    out = []
    for x in items:
        key = "odd" if x % 2 else "even"
        totals[key] += x
        out.append(f"{key} {x} {totals[key]}")
    return out


def test_cli_recovery_resumes_after_a_crash(project: Path, tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    init_db_dir(rec, 3)
    flag = str(tmp_path / "crashed.flag")
    first = aiowax_cli(project, "-r", str(rec), "-s", "0", "flows:crashy", CRASH_FLAG=flag)
    assert first.returncode == 1
    assert "RuntimeError: crash once" in first.stderr
    assert "step 'crash'" in first.stderr
    second = aiowax_cli(project, "-r", str(rec), "-s", "0", "flows:crashy", CRASH_FLAG=flag)
    assert (second.returncode, second.stderr) == (0, "")
    before, after = first.stdout.splitlines(), second.stdout.splitlines()
    # The epochs before the crash were done and committed: the second run
    # resumes after them, with the totals carried over.
    assert before == _expected_totals(range(1, 13))
    assert after == _expected_totals(range(13, 21), {"odd": 36, "even": 42})


def test_cli_recovery_init_errors(tmp_path: Path) -> None:
    def init(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "aiowax.recovery", *args],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    rec = tmp_path / "rec"
    assert init(str(rec), "1").returncode == 0
    again = init(str(rec), "2")
    assert again.returncode == 2
    assert "already holds partition files (part-0.sqlite3)" in again.stderr
    zero = init(str(tmp_path / "zero"), "0")
    assert zero.returncode == 2
    assert "init_db_dir: count must be positive, got 0" in zero.stderr


def _default_sigint() -> None:
    # A background job of a non-interactive shell starts with SIGINT ignored,
    # and the child would inherit that.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _popen(cwd: Path, *args: str, own_group: bool = False, **env: str) -> subprocess.Popen[bytes]:
    """``python -m aiowax ARGS``; with ``own_group``, in a process group of its own."""
    return subprocess.Popen(
        [sys.executable, "-m", "aiowax", *args],
        cwd=cwd,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
        process_group=0 if own_group else None,
        # Unbuffered: `communicate` reads the pipes directly, so what a
        # buffered `readline` had read ahead would be lost to it.
        bufsize=0,
    )


def _stopping(sig: str, timeout: str = "25") -> str:
    return (
        f"python -m aiowax: {sig} received: stopping gracefully (at most {timeout} s; "
        "a second signal aborts at once)\n"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_cli_signal_stops_gracefully_and_exits_0(project: Path, sig: signal.Signals) -> None:
    with _popen(project, "flows:endless()") as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"0\n"  # running
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    assert (proc.returncode, err.decode()) == (0, _stopping(sig.name))
    # What was read was written, in order, before the exit.
    lines = [b"0", *out.splitlines()]
    assert lines == [str(i).encode() for i in range(len(lines))]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_cli_ctrl_c_stops_gracefully_when_the_flow_forked_children(project: Path) -> None:
    # helper-56: a child forked by the flow (a multiprocessing Pool with the
    # fork start method) kept the event loop's signal wakeup fd, so Ctrl-C,
    # which signals the whole process group, reached the loop once from each
    # process: a second signal, and the graceful stop became an abort.
    with _popen(project, "flows:forking()", own_group=True) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"0\n"  # the pool's children are running
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err.decode()) == (0, _stopping("SIGINT"))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("wait", [True, False], ids=["running", "just_forked"])
def test_cli_a_child_the_flow_forks_ends_on_sigterm(project: Path, wait: bool) -> None:
    # A forked child kept the loop's SIGTERM handler, which only writes to
    # the loop's wakeup fd (dropped in the child): it ignored SIGTERM, so
    # Pool.terminate() could not end a pool's workers, and the run hung at
    # exit joining them (CI: test_cli_ctrl_c_stops_gracefully_when_the_flow_
    # forked_children timed out with the workers alive, SIGTERM caught). A
    # signal before the child's fork hook ran reached the parent's loop (a
    # graceful stop nobody asked for): the signals are blocked across forks.
    with _popen(project, f"flows:terminating({wait})") as proc:
        out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out, err) == (0, f"{-signal.SIGTERM}\n".encode(), b"")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_cli_sigterm_takes_a_final_snapshot(project: Path, tmp_path: Path) -> None:
    # No epoch ends in the default 10 s: only the stop's final snapshot can
    # let the second run go on exactly after the first.
    rec = tmp_path / "rec"
    init_db_dir(rec, 2)
    outs = []
    for _ in range(2):
        with _popen(project, "-r", str(rec), "-w", "2", "flows:endless()") as proc:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        assert (proc.returncode, err.decode()) == (0, _stopping("SIGTERM"))
        outs.append([int(line) for line in [first, *out.splitlines()]])
    assert outs[0][0] == 0
    assert outs[1][0] == outs[0][-1] + 1
    assert outs[0] + outs[1] == list(range(len(outs[0]) + len(outs[1])))


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(
    ("args", "env"),
    [(["--stop-timeout", "0.5"], {}), ([], {"AIOWAX_STOP_TIMEOUT": "0.5"})],
    ids=["option", "env"],
)
def test_cli_stop_timeout_aborts_and_exits_143(
    project: Path, args: list[str], env: dict[str, str]
) -> None:
    with _popen(project, *args, "flows:stuck()", **env) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"0\n"  # stuck in the mapper
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.decode() == _stopping("SIGTERM", "0.5") + (
        "python -m aiowax: the flow did not stop within 0.5 s: aborted, without a final snapshot\n"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(
    ("first", "second"),
    [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM, signal.SIGINT)],
    ids=["SIGINT-SIGINT", "SIGTERM-SIGINT"],
)
def test_cli_second_signal_aborts_at_once(
    project: Path, first: signal.Signals, second: signal.Signals
) -> None:
    with _popen(project, "flows:stuck()") as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        assert proc.stdout.readline() == b"0\n"
        proc.send_signal(first)
        assert proc.stderr.readline().decode() == _stopping(first.name)
        proc.send_signal(second)
        _, err = proc.communicate(timeout=20)  # well within the 25 s stop timeout
    assert proc.returncode == 128 + first
    assert err.decode() == (
        f"python -m aiowax: {second.name} received while stopping: aborting, "
        "without a final snapshot\n"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes")
def test_cli_closed_stdout_pipe_is_quiet(project: Path) -> None:
    # As in 'python -m aiowax flows:many | head -1'.
    with _popen(project, "flows:many") as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"0\n"
        proc.stdout.close()
        _, err = proc.communicate(timeout=30)
    assert (proc.returncode, err) == (1, b"")


# -- the -p supervisor (aiowax._cli_cluster.supervise), without a broker -------


def _supervisor(project: Path) -> tuple[subprocess.Popen[bytes], list[int]]:
    """`supervise` two copies of ``flows:ticking()``, each running; return it and their pids."""
    code = (
        "import sys\n"
        "from aiowax._cli_cluster import supervise\n"
        "sys.exit(supervise(['flows:ticking()'], 2, 'sup'))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=project,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
        bufsize=0,
    )
    assert proc.stdout is not None and proc.stderr is not None
    started = proc.stderr.readline().decode()
    assert started.startswith("sup: started 2 processes: "), started
    pids = [int(pid) for pid in started.split(": ")[-1].split(", ")]
    # Both copies are running once each has written its first item.
    firsts, deadline = 0, time.monotonic() + 30
    seen: list[bytes] = []  # said if they do not start
    while firsts < 2:
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            proc.kill()
            _, err = proc.communicate(timeout=30)
            pytest.fail(
                f"the copies did not both start in 30 s ({len(seen)} lines, {seen[:8]}): "
                f"{err.decode()}"
            )
        line = proc.stdout.readline()
        seen.append(line)
        firsts += line == b"0\n"
    return proc, pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX signals, /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP], ids=["SIGKILL", "SIGHUP"])
def test_the_copies_stop_gracefully_when_the_supervisor_dies_or_its_terminal_closes(
    project: Path, sig: signal.Signals
) -> None:
    # They ran on, unsupervised, in sessions of their own: a closed
    # terminal's SIGHUP killed the supervisor alone, as did a SIGKILL.
    proc, pids = _supervisor(project)
    try:
        with proc:
            proc.send_signal(sig)
            # The pipes end once every process holding them has exited: the
            # copies too, not only the supervisor.
            _, err = proc.communicate(timeout=30)
    finally:
        for pid in pids:  # a copy left on would tick for ever
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    stopping = "python -m aiowax: SIGTERM received: stopping gracefully"
    assert err.decode().count(stopping) == 2, err.decode()
    assert proc.returncode == (-signal.SIGKILL if sig == signal.SIGKILL else 0)


def test_a_copy_that_cannot_start_stops_the_ones_started(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # An OSError (out of processes) came out as a traceback, the copies
    # started left to run on unsupervised.
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(cmd: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        if started:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        sleeper = real_popen([sys.executable, "-c", "import time; time.sleep(60)"], **kwargs)
        started.append(sleeper)
        return sleeper

    monkeypatch.setattr(_cluster_cli.subprocess, "Popen", popen)
    assert _cluster_cli.supervise(["flows:ticking()"], 3, "sup") == 1
    assert capsys.readouterr().err == (
        "sup: could not start process 1 of 3: [Errno 11] Resource temporarily "
        "unavailable; stopping the 1 started\n"
    )
    (sleeper,) = started
    assert sleeper.returncode is not None  # stopped, and waited for


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_copy_killed_by_a_signal_is_named_and_its_status_is_128_plus_the_signal(
    project: Path,
) -> None:
    # It was "exited with status -9", and the supervisor's exit status 247
    # (-9 as a byte), in no table.
    proc, pids = _supervisor(project)
    with proc:
        assert proc.stderr is not None
        os.kill(pids[0], signal.SIGKILL)
        said = proc.stderr.readline().decode()
        expected = f"process 0 (pid {pids[0]}) was killed by SIGKILL (status 137); 1 still"
        assert said == f"sup: {expected} running\n"
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGKILL
