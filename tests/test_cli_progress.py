"""The command line's progress line (on a terminal) and its logging set-up."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from aiowax import _cli_progress
from aiowax._cli_progress import ProgressLine, configure_logging, erasing, report_progress
from aiowax.stats import FlowStats, StepStats

CLEAR = "\r\x1b[K"


def _stats(uptime: float, read: int, written: int, lag: int | None = None) -> FlowStats:
    return FlowStats(
        name="orders",
        status="running",
        uptime_s=uptime,
        epoch=3,
        steps=(
            StepStats(
                step_id="in", kind="input", pipeline="in", worker_index=0, items_in=read, lag=lag
            ),
            StepStats(step_id="m", kind="map", pipeline="in", worker_index=0, items_in=read),
            StepStats(
                step_id="out", kind="output", pipeline="in", worker_index=0, items_out=written
            ),
        ),
    )


def test_the_line_says_what_was_read_and_written_and_how_fast() -> None:
    line = ProgressLine(io.StringIO())
    first = line.text(_stats(2.0, 1000, 900))
    assert first == "aiowax: orders running 2s | read 1,000 | written 900 | epoch 3"
    second = line.text(_stats(4.0, 5000, 2900, lag=12))
    assert second == (
        "aiowax: orders running 4s | read 5,000 (2,000/s) | written 2,900 (1,000/s) "
        "| lag 12 | epoch 3"
    )
    assert "running 2m05s" in line.text(_stats(125.0, 5000, 2900))
    assert "running 59s" in line.text(_stats(59.6, 5000, 2900))  # not "60s"
    assert "running 2h01m" in line.text(_stats(7260.0, 5000, 2900))


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_the_line_comes_after_two_seconds_then_every_second_and_is_erased() -> None:
    out = io.StringIO()
    line = ProgressLine(out)
    calls = 0

    def stats() -> FlowStats:
        nonlocal calls
        calls += 1
        return _stats(float(calls), calls * 10, calls * 10)

    async with anyio.create_task_group() as tg:
        tg.start_soon(report_progress, stats, line)
        await anyio.sleep(1.9)
        assert out.getvalue() == ""  # a short run prints nothing
        await anyio.sleep(2.2)  # t = 4.1: lines at 2, 3 and 4
        tg.cancel_scope.cancel()
    text = out.getvalue()
    assert calls == 3
    assert text.count(CLEAR) == 4  # three lines, then the erase
    assert text.endswith(CLEAR)
    assert not line.shown


@pytest.fixture
def aiowax_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("aiowax")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield logger
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def test_a_log_record_erases_the_line_first(aiowax_logger: logging.Logger) -> None:
    out = io.StringIO()
    line = ProgressLine(out)
    configure_logging("info", out, line)
    line.show(_stats(3.0, 10, 10))
    aiowax_logger.info("hello %s", "there")
    aiowax_logger.debug("not shown at info")
    text = out.getvalue()
    shown_at = text.index("aiowax: orders")
    erased_at = text.index(CLEAR, shown_at)
    assert text.index("INFO aiowax: hello there") > erased_at
    assert "not shown" not in text
    assert not aiowax_logger.propagate


def test_without_a_level_warnings_still_show_and_user_logging_is_kept(
    aiowax_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = io.StringIO()
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    configure_logging(None, out, None)
    aiowax_logger.info("quiet")
    aiowax_logger.warning("loud")
    assert out.getvalue() == "WARNING aiowax: loud\n"
    # A flow module that configured logging keeps its set-up.
    before = aiowax_logger.handlers[:]
    monkeypatch.setattr(logging.getLogger(), "handlers", [logging.NullHandler()])
    configure_logging(None, io.StringIO(), None)
    assert aiowax_logger.handlers == before


def _read_terminal(main_fd: int) -> bytes:
    """What the child wrote on a pty, until it closed the terminal."""
    data = b""
    while True:
        try:
            chunk = os.read(main_fd, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        data += chunk
    return data


PACED_FLOW = """
import asyncio
import logging

from aiowax.connectors.inproc import IterableSource
from aiowax.connectors.stdio import StdOutSink
from aiowax.dataflow import Dataflow


async def paced():
    for i in range(40):
        await asyncio.sleep(0.1)
        if i == 5:
            logging.getLogger("aiowax.example").info("halfway there")
        yield i


flow = Dataflow("paced")
flow.input("inp", IterableSource(paced()))
flow.output("out", StdOutSink())
"""


def test_on_a_terminal_the_run_shows_progress_on_stderr_and_leaves_stdout_alone(
    tmp_path: Path,
) -> None:
    # A 4-second flow (the line starts after 2 s), its stderr a terminal.
    flow_file = tmp_path / "paced.py"
    flow_file.write_text(PACED_FLOW)
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiowax", str(flow_file), "--log-level", "info"],
        stdout=subprocess.PIPE,
        stderr=child_fd,
        cwd=tmp_path,
    )
    os.close(child_fd)
    err = _read_terminal(main_fd)
    out, _ = proc.communicate(timeout=30)
    os.close(main_fd)
    assert proc.returncode == 0
    # stdout is the flow's own: its 40 items, nothing else.
    assert out.decode().split() == [str(i) for i in range(40)]
    text = err.decode()
    assert "aiowax: paced running" in text
    assert "read " in text and "written " in text
    assert "INFO aiowax.example: halfway there" in text
    # The line is erased at the end: the terminal is left clean.
    assert text.rstrip("\n").endswith(CLEAR) or text.endswith(CLEAR)


def test_without_a_terminal_there_is_no_progress_line(tmp_path: Path) -> None:
    flow_file = tmp_path / "quick.py"
    flow_file.write_text(PACED_FLOW.replace("range(40)", "range(3)"))
    done = subprocess.run(
        [sys.executable, "-m", "aiowax", str(flow_file), "--log-level", "info"],
        capture_output=True,
        cwd=tmp_path,
        timeout=30,
        check=True,
    )
    assert "\x1b[K" not in done.stderr.decode()
    assert done.stdout.decode().split() == ["0", "1", "2"]


def test_a_bad_log_level_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from aiowax._cli import main

    with pytest.raises(SystemExit) as info:
        main(["examples/log_alerts.py", "--log-level", "loud"], prog="aiowax")
    assert info.value.code == 2
    assert "--log-level: expected one of debug, info, warning, error, critical" in (
        capsys.readouterr().err
    )


class _Terminal(io.StringIO):
    """A StringIO that says it is fd 2 (for the terminal's width)."""

    def fileno(self) -> int:
        return 2


def test_the_line_is_cut_to_the_terminal_width(monkeypatch: pytest.MonkeyPatch) -> None:
    # A line that wrapped left a copy of itself at every redraw: erasing
    # reaches only its last row.
    monkeypatch.setattr(
        _cli_progress.os, "get_terminal_size", lambda fd: os.terminal_size((40, 24))
    )
    out = _Terminal()
    line = ProgressLine(out)
    line.show(_stats(3.0, 123456789, 123456789))
    drawn = out.getvalue().removeprefix(CLEAR)
    assert len(drawn) == 39 and drawn.endswith("…")
    assert drawn.startswith("aiowax: orders running 3s | read 123,4")


def test_writes_to_stderr_during_a_run_erase_the_line_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The command line's own "SIGTERM received" and uvicorn's warnings went
    # on at the end of the line ("| epoch 1python -m aiowax: SIGTERM...").
    terminal = io.StringIO()
    monkeypatch.setattr(sys, "stderr", terminal)
    line = ProgressLine(terminal)
    with erasing(line):
        line.show(_stats(3.0, 10, 10))
        print("SIGTERM received", file=sys.stderr)
        print("again, the line being erased already", file=sys.stderr)
    assert sys.stderr is terminal
    text = terminal.getvalue()
    assert text.endswith(
        f"| epoch 3{CLEAR}SIGTERM received\nagain, the line being erased already\n"
    )


def test_on_one_terminal_a_flows_printed_items_never_join_the_line(tmp_path: Path) -> None:
    # stdout and stderr on the same terminal (the getting-started case): a
    # StdOutSink's item went on at the end of the line ("| epoch 1item 4").
    flow_file = tmp_path / "paced.py"
    flow_file.write_text(PACED_FLOW)
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiowax", str(flow_file)],
        stdout=child_fd,
        stderr=child_fd,
        cwd=tmp_path,
    )
    os.close(child_fd)
    screen = _read_terminal(main_fd)
    proc.wait(timeout=30)
    os.close(main_fd)
    assert proc.returncode == 0
    text = screen.decode()
    drawn = re.findall(r"aiowax: paced running [^\r\n]*", text)
    assert drawn, text  # the line was shown
    # Each drawing is erased before anything else is written.
    assert all(text[text.index(d) + len(d) :].startswith(CLEAR) for d in drawn), text
    items = [x for x in re.split(r"\r\n|\r\x1b\[K", text) if x.strip().isdigit()]
    assert [int(x) for x in items] == list(range(40))
