"""``python -m aiowax FLOW --http [HOST:]PORT``: the live page beside a command-line run.

The option's parsing and its usage errors are tested in-process; the server
itself end to end, in a subprocess that the test queries over HTTP and then
stops with SIGTERM. Port 0 lets the system pick a free port: the command
line prints the page's address on stderr, and the tests read it from there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from aiowax import _cli_http
from aiowax._cli import main
from aiowax._cli_http import HttpAddress, address

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

DEADLINE = 30.0

FLOWS = """
import asyncio
import itertools

from aiowax.connectors.stdio import StdOutSink
from aiowax.dataflow import Dataflow
from aiowax.testing import TestingSource


async def _pause(x):
    await asyncio.sleep(0.01)
    return x


def endless():
    flow = Dataflow(name="endless")
    flow.input("inp", TestingSource(itertools.count()))
    flow.map("pause", _pause)
    flow.output("out", StdOutSink())
    return flow


def short():
    flow = Dataflow(name="short")
    flow.input("inp", TestingSource(range(3)))
    flow.output("out", StdOutSink())
    return flow


def _check(x):
    if x == 2:
        raise ValueError(f"bad item {x}")
    return x


def failing():
    flow = Dataflow()
    flow.input("inp", TestingSource(range(5)))
    flow.map("check", _check)
    flow.output("out", StdOutSink())
    return flow
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "flows.py").write_text(textwrap.dedent(FLOWS))
    return tmp_path


# -- the option -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3030", HttpAddress("127.0.0.1", 3030)),  # loopback unless told otherwise
        ("0", HttpAddress("127.0.0.1", 0)),
        ("127.0.0.1:3030", HttpAddress("127.0.0.1", 3030)),
        ("0.0.0.0:80", HttpAddress("0.0.0.0", 80)),
        ("localhost:3030", HttpAddress("localhost", 3030)),
        ("[::1]:3030", HttpAddress("::1", 3030)),
        (" 3030 ", HttpAddress("127.0.0.1", 3030)),
    ],
)
def test_http_address(text: str, expected: HttpAddress) -> None:
    assert address(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "from 0 to 65535"),
        ("web", "from 0 to 65535"),
        ("70000", "from 0 to 65535"),
        ("-1", "from 0 to 65535"),
        # int() reads other scripts' digits: this was port 3030.
        ("\u0663\u0660\u0663\u0660", "from 0 to 65535"),
        ("host:", "from 0 to 65535"),
        (":3030", "a host before ':'"),
        ("::1:3030", "in brackets"),
        ("[nope]:3030", "not an IPv6 address"),
    ],
)
def test_http_address_refuses(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(message)):
        address(text)


def test_http_address_shows_ipv6_in_brackets() -> None:
    assert str(HttpAddress("::1", 80)) == "[::1]:80"
    assert str(HttpAddress("127.0.0.1", 80)) == "127.0.0.1:80"


def _usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv), prog="aiowax")
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_http_without_uvicorn_is_a_usage_error_naming_the_extra(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    err = _usage_error(capsys, "flows:short()", "--http", "0")
    hint = "pip install '.[web]' in the aiowax checkout"
    assert f"--http needs uvicorn, which is not installed: {hint}" in err


def test_http_on_a_busy_port_is_a_usage_error(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project)
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        err = _usage_error(capsys, "flows:short()", "--http", f"127.0.0.1:{port}")
    assert f"--http 127.0.0.1:{port}: cannot listen there" in err


def test_http_from_the_environment_is_checked(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project)
    monkeypatch.setenv("AIOWAX_HTTP", "web")
    err = _usage_error(capsys, "flows:short()")
    assert "environment variable AIOWAX_HTTP: expected [HOST:]PORT" in err


def test_http_does_not_go_with_several_processes(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(project)
    args = ["--kafka-cluster", "localhost:9092", "--app-id", "a", "-p", "2", "--http", "0"]
    err = _usage_error(capsys, "flows:short()", *args)
    assert "--http serves one process's flow" in err


def test_help_says_the_default_is_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"], prog="aiowax")
    text = " ".join(capsys.readouterr().out.split())
    assert "a bare PORT listens on 127.0.0.1 only" in text
    assert "write the host out, e.g. 0.0.0.0:3030" in text
    assert "AIOWAX_HTTP" in text


# -- end to end -----------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIOWAX_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def _default_sigint() -> None:
    # A test runner may ignore SIGINT in its children; the CLI needs it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def spawn(project: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Started CLIs, killed at the end if a test left one running."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _start(
    procs: list[subprocess.Popen[bytes]], cwd: Path, *args: str, **env: str
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "aiowax", *args],
        cwd=cwd,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_default_sigint,
        bufsize=0,
    )
    procs.append(proc)
    return proc


def _stderr_line(proc: subprocess.Popen[bytes]) -> str:
    """The next line of the CLI's stderr, read within the deadline."""
    assert proc.stderr is not None
    fd = proc.stderr.fileno()
    line = b""
    deadline = time.monotonic() + DEADLINE
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        ready, _, _ = select.select([fd], [], [], max(0.0, left))
        assert ready, f"no line on stderr within {DEADLINE} s (so far {line!r})"
        chunk = os.read(fd, 1)
        assert chunk, f"stderr closed after {line!r}"
        line += chunk
    return line.decode()


def _page_url(proc: subprocess.Popen[bytes]) -> str:
    line = _stderr_line(proc)
    match = re.fullmatch(r"python -m aiowax: live page at (http://\S+/)\n", line)
    assert match, line
    return match[1]


def test_http_serves_the_running_flow_and_sigterm_stops_both(
    project: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    proc = _start(spawn, project, "flows:endless()", "--http", "127.0.0.1:0")
    url = _page_url(proc)
    assert url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=url, timeout=DEADLINE) as client:
        ready = client.get("readyz")
        stats = client.get("stats")
        page = client.get("")
        graph = client.get("dataflow")
    assert (ready.status_code, ready.json()["status"]) == (200, "running")
    body = stats.json()
    assert body["name"] == "endless"
    assert [s["step_id"] for s in body["steps"]] == ["inp", "pause", "out"]
    assert page.headers["content-type"].startswith("text/html")
    assert [s["step_id"] for s in graph.json()["steps"]] == ["inp", "pause", "out"]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 0
    assert err.decode() == (
        "python -m aiowax: SIGTERM received: stopping gracefully (at most 25 s; "
        "a second signal aborts at once)\n"
    )
    # stdout is the flow's alone: its items, in order, and nothing of the server.
    lines = out.decode().splitlines()
    assert lines == [str(i) for i in range(len(lines))]
    # The server stopped with the flow.
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "livez", timeout=DEADLINE)


def test_http_port_alone_from_the_environment_listens_on_loopback(
    project: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    # A flow that ends by itself: the command line ends with it, server and all.
    proc = _start(spawn, project, "flows:short()", AIOWAX_HTTP="0")
    url = _page_url(proc)
    out, err = proc.communicate(timeout=DEADLINE)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", url)
    assert (proc.returncode, out, err) == (0, b"0\n1\n2\n", b"")


def test_http_with_a_failing_flow_exits_1_with_its_traceback(
    project: Path, spawn: list[subprocess.Popen[bytes]]
) -> None:
    proc = _start(spawn, project, "flows:failing()", "--http", "0")
    _page_url(proc)
    out, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 1
    assert out == b"0\n1\n"
    assert "ValueError: bad item 2" in err.decode()


# -- the server: a deadline for each request head ---------------------------------------


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The smallest ASGI app: 200 and a word, for any request."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def _closed_after(stream: Any) -> float:
    """Seconds until the server closes ``stream`` (reading whatever it sends first)."""
    start = anyio.current_time()
    with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
        while True:
            await stream.receive()
    return anyio.current_time() - start


async def _head_deadlines(server: Any, listener: socket.socket) -> list[float]:
    """How long the server kept connections that sent no whole head open, in turn.

    One silent, one with half a head (opened at once with the first), and
    one that had a request answered, then sent half of the next head.
    """
    port = listener.getsockname()[1]
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: server.serve(sockets=[listener]))
        while not server.started:
            await anyio.sleep(0.01)
        silent = await anyio.connect_tcp("127.0.0.1", port)
        partial = await anyio.connect_tcp("127.0.0.1", port)
        await partial.send(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
        async with silent, partial:
            waited = [await _closed_after(silent), await _closed_after(partial)]
        async with await anyio.connect_tcp("127.0.0.1", port) as client:
            await client.send(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await client.receive()
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
            await client.send(b"GET /livez HTTP/1.1\r\n")
            waited.append(await _closed_after(client))
        server.should_exit = True
    return waited


@pytest.mark.asyncio(loop_factories=["virtual"])
async def test_a_connection_that_never_sends_a_whole_head_is_closed() -> None:
    # uvicorn has no deadline for a request head: ~85 such connections at a
    # 100-file limit made the probes fail (/livez too, restarting a healthy
    # process). Any byte cancelled the keep-alive timeout, which does not
    # cover a first request anyway.
    server = _cli_http._server(_hello)
    # Virtual time: a connection left open for ever fails this at once.
    with anyio.fail_after(600):
        silent, partial, next_head = await _head_deadlines(
            server, socket.create_server(("127.0.0.1", 0))
        )
    head = _cli_http.HEAD_TIMEOUT_S
    assert silent == pytest.approx(head, abs=0.2)
    assert partial == pytest.approx(0, abs=0.2)  # its deadline passed meanwhile
    assert next_head == pytest.approx(head, abs=0.2)
