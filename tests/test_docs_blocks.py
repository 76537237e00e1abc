"""Every code block of the docs runs, and prints what the docs say it prints.

The rules (docs/contributing.md says the same for the writers of pages):

- Every fenced block names its language. ``python``, ``sh`` and ``console``
  blocks are code, and every one of them runs: no block is skipped, and a
  test checks that none is. ``text``, ``json``, ``yaml``, ``toml``,
  ``properties`` and ``mermaid`` are data (``json``, ``yaml``, ``toml`` and
  ``properties`` must parse).
- The ``python`` blocks of one page run in order, in one namespace (a module
  of its own), like a doctest session. Top-level ``await`` works: the page
  has one event loop, on which such blocks run; the others run outside it,
  so ``run_main`` works there. The working directory is a fresh temporary
  directory holding a copy of ``examples/`` and ``docs/examples/``, and it is
  importable.
- A block whose only line is ``--8<-- "docs/examples/NAME"`` (pymdownx
  snippets, as the site includes it) stands for that file's text.
- A ``python`` block whose first line is ``# PATH.py`` (``# NAME.py``, or
  ``# myapp/NAME.py`` for a module of a package) is also saved as that file
  in the working directory (so later blocks may import it, and commands may
  run it). ``test_*.py`` and ``conftest.py`` files are only saved: once the
  page's blocks have run, pytest runs the page's tests there, and they must
  pass. A ``properties`` block whose first line is ``# NAME.properties`` is
  saved the same way (a ``client.properties`` for a command to read).
- ``sh`` and ``console`` blocks run with ``bash`` in the same working
  directory, where ``python`` is this interpreter. Their commands may only
  be ``python -m aiowax...``, ``python FILE.py`` (a file of the working
  directory), ``aiowax``, ``uvicorn``, ``sort`` and ``cat``, optionally
  after ``NAME=VALUE`` assignments; each must exit with 0. The ``checkout``
  marker (below) is for the others: installs, the docs site, the suite.
- Markers: HTML comments on the lines right before a block (several may be
  stacked, blank lines between them are fine), invisible on the site. An
  HTML comment there that is not one of these fails the test.

  - ``<!-- output -->``: the block is what the block before it printed to
    stdout: compared line by line, trailing spaces ignored, with ``...``
    matching anything (doctest's ELLIPSIS); a ``json`` one is compared as
    parsed JSON.
  - ``<!-- checkout -->`` and ``<!-- checkout: venv -->``: the ``sh`` block
    is run verbatim, with ``bash -e``, in a throwaway copy of the checkout
    (its files as a fresh clone has them, ``git ls-files``: no ``.venv``,
    no ``.git``), so ``.`` and ``.venv`` there are the copy's. ``python3``
    is this interpreter (``sys.executable``), so virtualenvs made there are
    of the Python under test. Without an argument, the block runs in the
    page's own copy, made at its first such block with no virtualenv and
    none activated: the block makes its ``.venv`` itself (the README's
    fresh machine). With ``venv``, it runs in one copy shared by all the
    pages' ``checkout: venv`` blocks, whose ``.venv`` (made by the test at
    first use) is activated: ``pip``, ``python`` and the scripts installed
    there come first on ``PATH``. After a block, everything its ``pip
    install`` commands named must be installed in the copy's ``.venv`` and
    import there: ``.`` (aiowax, from the copy, with its dependencies) and
    each extra's requirements, as pyproject.toml lists them. A pytest that
    such a block runs (the README's test command) sees ``PYTEST_ADDOPTS``
    naming one small test file: the whole suite would run this test again,
    and the block itself again, without end; the variable `INNER_RUN` set
    there makes this module skip itself in any case. These blocks start
    with the session, in background threads (their installs overlap the
    pages that wait on servers); the page's test waits for each block's
    result where it stands on the page, and checks it there.
  - ``<!-- kafka: [TOPIC[:PARTITIONS] ...] -->``: the page needs Kafka. From
    this block on, ``$KAFKA_BROKERS`` holds the address of a Kafka-compatible
    broker of the page's own (Tansu, memory-only, started here and stopped
    after the page), for the ``python`` blocks and the commands alike; the
    topics listed are created first (1 partition unless said). The blocks
    read the brokers as a user would: ``os.environ.get("KAFKA_BROKERS",
    "localhost:9092")``, ``--kafka-cluster "$KAFKA_BROKERS"``.
  - ``<!-- run-until: SECONDS [URL ...] -->``: the block runs until it is
    stopped (a server, a run in cluster mode). The commands of a ``sh``
    block are started together, as from separate terminals; each must still
    run after SECONDS seconds, or once every URL has answered 200 (which
    must happen within SECONDS), and then gets SIGTERM. Each must then exit
    with 0, printing no traceback (uvicorn, which re-raises the SIGTERM it
    handled, may end by it after ``Application shutdown complete.``, and
    ``mkdocs serve``, which has no handler, after ``Serving on``). A
    ``python`` block is stopped the same way: a top-level ``await`` is
    cancelled (as Ctrl-C cancels ``asyncio.run``), other code gets SIGTERM
    (as a server does); it must not end before.
  - ``<!-- subprocess -->``: the ``python`` block runs as a script of its own
    (``python BLOCK.py`` in the working directory), not in the page's
    namespace: for code that changes the whole process (OpenTelemetry's
    global providers, say). It must exit with 0; its stdout is its output.
"""

from __future__ import annotations

import ast
import asyncio
import concurrent.futures
import contextlib
import doctest
import fcntl
import importlib
import importlib.util
import inspect
import io
import json
import linecache
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import types
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(p for p in DOCS.rglob("*.md")), ROOT / "README.md"]

CODE_LANGS = {"python", "sh", "console"}
DATA_LANGS = {"text", "json", "yaml", "toml", "properties", "mermaid"}
ALLOWED_COMMANDS = {"aiowax", "uvicorn", "sort", "cat"}

MARKER_KINDS = ("output", "checkout", "run-until", "kafka", "subprocess")
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)(?P<lang>[^\s`]*)[^`]*$")
MARKER = re.compile(
    r"^\s*<!--\s*(?P<kind>" + "|".join(MARKER_KINDS) + r")\s*(?::\s*(?P<arg>.*?))?\s*-->\s*$"
)
SNIPPET = re.compile(r'^--8<--\s+"(?P<path>[^"]+)"\s*$')
FILE_HEADER = re.compile(r"^# (?P<name>[\w.-]+(?:/[\w.-]+)*\.py)\s*$")
PROPERTIES_HEADER = re.compile(r"^# (?P<name>[\w.-]+\.properties)\s*$")
#: An HTML comment that looks like a marker (checked against `MARKER_KINDS`).
COMMENT = re.compile(r"^\s*<!--\s*(?P<kind>[\w-]+)\s*(?::.*)?-->\s*$")
TOPIC = re.compile(r"^(?P<name>[\w.-]+)(?::(?P<partitions>[1-9]\d*))?$")
ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")

#: How long a stopped command may take to exit, in seconds.
STOP_TIMEOUT = 60.0
#: What uvicorn prints once its graceful shutdown is over.
UVICORN_SHUTDOWN = "Application shutdown complete."
#: Programs that may end by the SIGTERM that stops them, once they have
#: printed this to stderr: ``mkdocs serve`` has no handler (Ctrl-C ends it
#: by its signal, too). Any command may, once uvicorn (which re-raises the
#: SIGTERM it handled) has printed `UVICORN_SHUTDOWN`.
ENDS_BY_SIGTERM = {"mkdocs": "Serving on"}

#: Set in the environment of ``checkout`` blocks; a pytest run there (the
#: README's test command) skips this module, so that it never runs itself.
INNER_RUN = "AIOWAX_DOCS_INNER_RUN"
#: What that pytest runs instead of the whole suite: one small, quick file.
INNER_PYTEST_ADDOPTS = "-p no:cacheprovider tests/test_public_api.py"
#: How long one ``checkout`` block may take, in seconds (a virtualenv, then
#: ``pip install`` of the test extra: about 20 s with pip's cache).
CHECKOUT_TIMEOUT = 600.0

if os.environ.get(INNER_RUN):
    pytest.skip(
        f"{INNER_RUN} is set: the docs test is running a docs block that runs the suite",
        allow_module_level=True,
    )


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str  # snippets expanded
    markers: dict[str, str | None] = field(default_factory=dict)  # kind -> argument
    snippet: str | None = None  # the included file, if the block is a snippet

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def is_output(self) -> bool:
        return "output" in self.markers

    @property
    def runs(self) -> bool:
        """A code block, which the test runs (every one of them)."""
        return self.lang in CODE_LANGS

    @property
    def checkout(self) -> str | None:
        """``"page"`` or ``"venv"`` for a block run in a copy of the checkout, else ``None``."""
        if "checkout" not in self.markers:
            return None
        arg = self.markers["checkout"]
        assert arg in (None, "venv"), f"{self.where}: <!-- checkout --> or <!-- checkout: venv -->"
        return arg or "page"

    @property
    def run_until(self) -> tuple[float, list[str]] | None:
        """``(seconds, urls)`` of a ``run-until`` marker."""
        if "run-until" not in self.markers:
            return None
        words = (self.markers["run-until"] or "").split()
        assert words, f"{self.where}: <!-- run-until: SECONDS [URL ...] -->"
        try:
            seconds = float(words[0])
        except ValueError:
            pytest.fail(f"{self.where}: run-until: {words[0]!r} is not a number of seconds")
        assert seconds > 0, f"{self.where}: run-until needs a positive number of seconds"
        for url in words[1:]:
            parts = urlsplit(url)
            assert parts.scheme == "http" and parts.port, (
                f"{self.where}: {url!r}: http://HOST:PORT/..."
            )
        return seconds, words[1:]

    @property
    def kafka_topics(self) -> list[tuple[str, int]] | None:
        """The topics of a ``kafka`` marker, or ``None`` without one."""
        if "kafka" not in self.markers:
            return None
        topics = []
        for word in (self.markers["kafka"] or "").split():
            match = TOPIC.match(word)
            assert match, f"{self.where}: kafka: {word!r} is not TOPIC[:PARTITIONS]"
            topics.append((match["name"], int(match["partitions"] or 1)))
        return topics


def parse_blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = match["indent"], match["fence"]
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        if i == len(lines):
            raise AssertionError(f"{page.relative_to(ROOT)}:{start + 1}: unclosed code fence")
        i += 1
        # The markers are the marker lines right before the fence.
        markers: dict[str, str | None] = {}
        before = start - 1
        while before >= 0:
            if not lines[before].strip():
                before -= 1
                continue
            marker = MARKER.match(lines[before])
            if not marker:
                comment = COMMENT.match(lines[before])
                assert not comment, (
                    f"{page.relative_to(ROOT)}:{before + 1}: <!-- {comment['kind']} --> is not "
                    f"a marker ({', '.join(MARKER_KINDS)}); every code block runs"
                )
                break
            assert marker["kind"] not in markers, (
                f"{page.relative_to(ROOT)}:{before + 1}: <!-- {marker['kind']} --> twice"
            )
            markers[marker["kind"]] = marker["arg"]
            before -= 1
        text = "\n".join(body) + "\n"
        snippet = None
        snip = SNIPPET.match(text.strip()) if len(body) == 1 else None
        if snip:
            snippet = snip["path"]
            text = (ROOT / snippet).read_text(encoding="utf-8")
        blocks.append(
            Block(
                page=page,
                line=start + 1,
                lang=match["lang"],
                text=text,
                markers=markers,
                snippet=snippet,
            )
        )
    return blocks


ALL_BLOCKS = {page: parse_blocks(page) for page in PAGES}


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _all_blocks() -> Iterator[Block]:
    for blocks in ALL_BLOCKS.values():
        yield from blocks


# -- checks on the markup ---------------------------------------------------------


def test_every_block_names_a_known_language() -> None:
    known = CODE_LANGS | DATA_LANGS
    bad = [f"{b.where}: ```{b.lang}" for b in _all_blocks() if b.lang not in known]
    assert not bad, f"fences need one of {sorted(CODE_LANGS | DATA_LANGS)}: {bad}"


def test_no_block_is_skipped() -> None:
    """Every code block runs: there is no way to mark one as not run.

    The page test runs every block it parsed (and counts them); what could
    once be skipped (installs, the test command, the docs site, a SASL/TLS
    cluster) runs in a copy of the checkout or against the page's broker.
    """
    skips = re.compile(r"<!--\s*(not-run|skip|no-run|norun)\b", re.I)
    for page in PAGES:
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            assert not skips.search(line), (
                f"{page.relative_to(ROOT)}:{number}: no block is skipped: make it run "
                "(see docs/contributing.md)"
            )
    rules = (DOCS / "contributing.md").read_text(encoding="utf-8")
    assert "not-run" not in rules, "docs/contributing.md still describes blocks not run"
    code = [b for b in _all_blocks() if b.lang in CODE_LANGS]
    assert code and all(b.runs for b in code)


def test_markers_go_with_blocks_they_fit() -> None:
    for b in _all_blocks():
        kinds = set(b.markers)
        if b.is_output:
            assert kinds == {"output"}, f"{b.where}: an output block takes no other marker"
            assert b.markers["output"] is None, f"{b.where}: <!-- output --> takes no argument"
            continue
        if kinds:
            assert b.lang in CODE_LANGS, f"{b.where}: markers {sorted(kinds)} on a data block"
        if "subprocess" in kinds:
            assert b.lang == "python", f"{b.where}: <!-- subprocess --> is for python blocks"
            assert b.markers["subprocess"] is None, f"{b.where}: <!-- subprocess --> takes no arg"
            assert "run-until" not in kinds, f"{b.where}: a subprocess block runs to its end"
        if "checkout" in kinds:
            assert b.lang in ("sh", "console"), f"{b.where}: <!-- checkout --> is for sh blocks"
            assert kinds <= {"checkout", "run-until"}, (
                f"{b.where}: <!-- checkout --> goes with run-until only"
            )
        b.run_until  # noqa: B018 - checks its syntax
        b.kafka_topics  # noqa: B018
        b.checkout  # noqa: B018


def test_every_output_block_follows_a_block_that_runs() -> None:
    for blocks in ALL_BLOCKS.values():
        for before, b in zip([None, *blocks], blocks, strict=False):
            if not b.is_output:
                continue
            assert b.lang in DATA_LANGS, f"{b.where}: an output block is text, json or mermaid"
            assert before is not None, f"{b.where}: output of nothing"
            assert before.runs and not before.is_output, (
                f"{b.where}: an output block must follow a block that runs ({before.where})"
            )


def test_snippets_come_from_docs_examples_and_every_example_is_shown() -> None:
    included = {b.snippet for b in _all_blocks() if b.snippet is not None}
    for path in included:
        assert path.startswith("docs/examples/"), f"snippet {path!r}: keep them in docs/examples"
    examples = {
        str(p.relative_to(ROOT))
        for p in (DOCS / "examples").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert examples - included == set(), "examples no page includes"


def test_data_blocks_parse() -> None:
    for b in _all_blocks():
        if b.lang == "json" and "..." not in b.text:
            json.loads(b.text)
        elif b.lang == "yaml":
            yaml.safe_load(b.text)
        elif b.lang == "toml":
            tomllib.loads(b.text)
        elif b.lang == "properties":
            _properties(b)


def _properties(block: Block) -> dict[str, str]:
    """The settings of a ``properties`` block: ``KEY=VALUE`` lines, ``#``/``!`` comments."""
    settings = {}
    for number, raw in enumerate(block.text.splitlines()):
        line = raw.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, sep, value = line.partition("=")
        assert sep and key.strip(), (
            f"{block.where}: line {number + 1} of the block is not KEY=VALUE: {raw!r}"
        )
        settings[key.strip()] = value.strip()
    return settings


# -- the API reference covers the public modules -------------------------------------


def _public_modules() -> set[str]:
    from test_public_api import PUBLIC_MODULES

    modules = set(PUBLIC_MODULES)
    for optional in ("aiowax.asgi", "aiowax.prometheus", "aiowax.otel"):
        try:
            importlib.import_module(optional)
        except ImportError:
            continue
        modules.add(optional)
    # No names of its own: nothing to document.
    modules.discard("aiowax.connectors")
    return modules


def test_the_api_reference_has_a_page_per_public_module_and_only_those() -> None:
    documented: dict[str, Path] = {}
    for page in sorted((DOCS / "api").glob("*.md")):
        for match in re.finditer(r"^::: (\S+)", page.read_text(encoding="utf-8"), re.M):
            documented[match[1]] = page
    for module in documented:
        importlib.import_module(module)  # a page for a module that does not import fails
    wanted = _public_modules()
    missing = sorted(wanted - set(documented))
    assert not missing, f"add a docs/api page (and a nav entry in mkdocs.yml) for {missing}"
    extra = sorted(set(documented) - wanted)
    assert not extra, f"docs/api documents modules that are not public: {extra}"
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    for page in set(documented.values()):
        assert f"api/{page.name}" in nav, f"{page.name} is not in the nav of mkdocs.yml"


# -- running the blocks ----------------------------------------------------------


def _compare(block: Block, expected: Block, actual: str) -> None:
    if expected.lang == "json":
        assert json.loads(actual) == json.loads(expected.text), (
            f"{expected.where}: the output of {block.where} differs"
        )
        return

    def norm(text: str) -> str:
        return "\n".join(line.rstrip() for line in text.strip("\n").splitlines()) + "\n"

    want, got = norm(expected.text), norm(actual)
    checker = doctest.OutputChecker()
    if not checker.check_output(want, got, doctest.ELLIPSIS):
        pytest.fail(
            f"{expected.where}: the output of {block.where} differs\n"
            f"--- the page says:\n{want}--- the block printed:\n{got}",
            pytrace=False,
        )


def _commands(block: Block) -> list[str]:
    """The commands of a sh block (continuations joined, comments dropped)."""
    joined = block.text.replace("\\\n", " ")
    return [line for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def _check_allowed(block: Block, command: str, workdir: Path) -> None:
    for part in re.split(r"\|", command):
        words = shlex.split(part, comments=True)
        while words and ASSIGNMENT.match(words[0]):
            words.pop(0)
        if not words:
            continue
        if words[0] == "python":
            module = len(words) > 2 and words[1] == "-m" and words[2].split(".")[0] == "aiowax"
            script = len(words) > 1 and words[1].endswith(".py") and (workdir / words[1]).is_file()
            ok = module or script
        else:
            ok = words[0] in ALLOWED_COMMANDS
        assert ok, (
            f"{block.where}: {part.strip()!r} is not a command the docs test runs "
            f"(python -m aiowax, python FILE.py, {', '.join(sorted(ALLOWED_COMMANDS))})"
        )


def _sh_env(bindir: Path) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_sh(block: Block, workdir: Path, bindir: Path) -> str:
    env = _sh_env(bindir)
    out = []
    for command in _commands(block):
        _check_allowed(block, command, workdir)
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (
            f"{block.where}: {command!r} exited with {result.returncode}\n{result.stderr}"
        )
        out.append(result.stdout)
    return "".join(out)


# -- blocks that run until they are stopped ------------------------------------------


def _answers(url: str) -> bool:
    """Whether ``url`` answers 200 right now."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def _check_ports_free(block: Block, urls: list[str]) -> None:
    for url in urls:
        parts = urlsplit(url)
        with socket.socket() as probe:
            probe.settimeout(1)
            in_use = probe.connect_ex((parts.hostname or "127.0.0.1", parts.port or 80)) == 0
        assert not in_use, (
            f"{block.where}: something already listens on port {parts.port} ({url}): "
            "stop it, the block's server needs the port"
        )


@contextlib.contextmanager
def _fixed_ports() -> Iterator[None]:
    """One server block at a time on this machine: the docs use fixed ports.

    Serializes concurrent runs of this test (other checkouts, other
    sessions) instead of letting their servers collide.
    """
    path = Path(tempfile.gettempdir()) / "aiowax-docs-servers.lock"
    with path.open("a") as lock:
        deadline = time.monotonic() + 240
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{path} stayed locked for 240 s (another docs test run?)")
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _exec(command: str) -> str:
    """``command`` with ``exec`` before its program, so SIGTERM reaches the program."""
    assignments = re.match(r"\s*(?:[A-Za-z_]\w*=\S*\s+)*", command)
    assert assignments is not None
    return f"{command[: assignments.end()]}exec {command[assignments.end() :]}"


def _program(command: str) -> str:
    """The name of the program a command runs (after its ``NAME=VALUE`` assignments)."""
    words = shlex.split(command, comments=True)
    while words and ASSIGNMENT.match(words[0]):
        words.pop(0)
    return Path(words[0]).name if words else ""


def _run_sh_until_stopped(
    block: Block, workdir: Path, env: dict[str, str], logs: Path, *, checked: bool = True
) -> str:
    """Run a ``run-until`` sh block in ``workdir``; ``checked``: only the allowed commands."""
    seconds, urls = block.run_until or (0.0, [])
    commands = _commands(block)
    for command in commands:
        if checked:
            _check_allowed(block, command, workdir)
        assert "|" not in command, f"{block.where}: run-until: one program per command"
    started: list[tuple[str, subprocess.Popen[bytes], Path, Path]] = []

    def log(path: Path) -> str:
        return path.read_text(errors="replace")

    with _fixed_ports():
        _check_ports_free(block, urls)
        try:
            for n, command in enumerate(commands):
                out, err = logs / f"{block.line}-{n}.out", logs / f"{block.line}-{n}.err"
                with out.open("wb") as out_file, err.open("wb") as err_file:
                    proc = subprocess.Popen(
                        ["bash", "-c", _exec(command)],
                        cwd=workdir,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=out_file,
                        stderr=err_file,
                    )
                started.append((command, proc, out, err))
            deadline = time.monotonic() + seconds
            waiting = list(urls)
            while time.monotonic() < deadline and (waiting or not urls):
                for command, proc, _out, err in started:
                    if proc.poll() is not None:
                        pytest.fail(
                            f"{block.where}: {command!r} ended with {proc.returncode} before it "
                            f"was stopped\n{log(err)[-3000:]}",
                            pytrace=False,
                        )
                waiting = [url for url in waiting if not _answers(url)]
                time.sleep(0.2)
            for _command, proc, _out, _err in started:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
            statuses: list[int | None] = []
            for _command, proc, _out, _err in started:
                try:
                    statuses.append(proc.wait(STOP_TIMEOUT))
                except subprocess.TimeoutExpired:
                    statuses.append(None)
        finally:
            for _command, proc, _out, _err in started:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    assert not waiting, (
        f"{block.where}: {waiting} did not answer 200 within {seconds:g} s\n"
        + "\n".join(log(err)[-2000:] for *_, err in started)
    )
    output = []
    for (command, _proc, out, err), status in zip(started, statuses, strict=True):
        stderr = log(err)
        program = _program(command)
        graceful = status == 0 or (
            status in (-signal.SIGTERM, 128 + signal.SIGTERM)
            and (UVICORN_SHUTDOWN in stderr or ENDS_BY_SIGTERM.get(program, "\0") in stderr)
        )
        assert graceful, (
            f"{block.where}: {command!r} exited with {status} after SIGTERM "
            f"(None: still running after {STOP_TIMEOUT:g} s)\n{stderr[-3000:]}"
        )
        assert "Traceback (most recent call last)" not in stderr, (
            f"{block.where}: {command!r} printed a traceback\n{stderr[-3000:]}"
        )
        output.append(log(out))
    return "".join(output)


async def _cancelled_when_due(coro: Any, block: Block) -> None:
    """Run a top-level ``await`` block until it is due to stop, then cancel it."""
    seconds, urls = block.run_until or (0.0, [])
    task = asyncio.ensure_future(coro)
    deadline = time.monotonic() + seconds
    waiting = list(urls)
    while time.monotonic() < deadline and (waiting or not urls) and not task.done():
        still = []
        for url in waiting:
            if not await asyncio.to_thread(_answers, url):
                still.append(url)
        waiting = still
        await asyncio.wait({task}, timeout=0.2)
    if task.done():
        task.result()  # its error, if it failed
        pytest.fail(f"{block.where}: the block ended before it was stopped", pytrace=False)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not waiting, f"{block.where}: {waiting} did not answer 200 within {seconds:g} s"


def _stopped_by_sigterm(run: Callable[[], object], block: Block) -> None:
    """Run a blocking block (a server) until it is due to stop, then SIGTERM this process.

    The block must handle SIGTERM (a server does); this test's own handler
    stands in meanwhile, so the signal never ends the test run.
    """
    seconds, urls = block.run_until or (0.0, [])
    lock = threading.Lock()
    done = threading.Event()
    sent: list[bool] = []
    waiting = list(urls)

    def stop_when_due() -> None:
        nonlocal waiting
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and (waiting or not urls) and not done.is_set():
            waiting = [url for url in waiting if not _answers(url)]
            done.wait(0.2)
        with lock:
            if not done.is_set():
                sent.append(True)
                os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    stopper = threading.Thread(target=stop_when_due, daemon=True)
    stopper.start()
    try:
        run()
    finally:
        with lock:
            done.set()
        stopper.join()
        signal.signal(signal.SIGTERM, previous)
    assert sent, f"{block.where}: the block ended before it was stopped"
    assert not waiting, f"{block.where}: {waiting} did not answer 200 within {seconds:g} s"


# -- a page's Kafka broker -------------------------------------------------------------


def _tansu_broker_class(monkeypatch: pytest.MonkeyPatch) -> Any:
    """`TansuBroker` of tests/connectors/conftest.py (the connector tests' broker)."""
    connectors = ROOT / "tests" / "connectors"
    monkeypatch.syspath_prepend(str(connectors))  # for its kafka_helpers
    conftest = connectors / "conftest.py"
    spec = importlib.util.spec_from_file_location("_docs_connectors_conftest", conftest)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TansuBroker


class _PageKafka:
    """The page's own Kafka broker, started at its first ``kafka`` marker."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self._broker: Any = None

    def prepare(self, topics: list[tuple[str, int]]) -> None:
        if self._broker is None:
            pytest.importorskip("confluent_kafka", reason="needs confluent-kafka")
            self._broker = _tansu_broker_class(self._monkeypatch)()
            self._broker.start()  # skips the test without the Tansu binary
            self._monkeypatch.setenv("KAFKA_BROKERS", self._broker.bootstrap)
        if topics:
            from confluent_kafka.admin import AdminClient, NewTopic

            admin = AdminClient({"bootstrap.servers": self._broker.bootstrap})
            futures = admin.create_topics(
                [NewTopic(name, partitions, 1) for name, partitions in topics], operation_timeout=10
            )
            for future in futures.values():
                future.result(15)

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.stop()


# -- blocks run in a copy of the checkout ---------------------------------------------


def _copy_checkout(dest: Path) -> None:
    """Copy the files a fresh clone has into ``dest``: git's files, not .git, .venv or site/.

    Tracked files and new ones not ignored yet (``git ls-files --cached
    --others --exclude-standard``), as they are in the working tree.
    """
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            timeout=60,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"the checkout blocks copy the files git lists, and git failed: {exc}")
    for name in sorted(set(listed.stdout.decode().split("\0")) - {""}):
        source = ROOT / name
        if not source.is_file():
            continue  # deleted in the working tree
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)


class _Checkouts:
    """The ``checkout`` blocks of the pages under test, run in throwaway copies.

    They start with the session, in background threads, so that their
    installs overlap the pages that mostly wait (servers, cluster runs); a
    page's test waits for the result of each of its blocks, and checks it,
    where the block stands on the page. The blocks of one copy run one
    after the other, in the order of the pages: every ``checkout: venv``
    block in one thread (they share a copy), each page's own copy in one.
    After a block fails, the later blocks of its page in that copy do not
    run (the page's test stops at the first failure anyway).
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, pages: list[Path]) -> None:
        self._factory = tmp_path_factory
        self._logs = tmp_path_factory.mktemp("checkout-logs")
        self._copies: list[Path] = []
        # python3 is the interpreter under test; a bare pip, which on a
        # machine with no virtualenv active would install into the system's
        # Python (here: whatever PATH holds), fails instead.
        self.shims = tmp_path_factory.mktemp("checkout-bin")
        for name in ("python3", "python"):
            (self.shims / name).write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
        for name in ("pip", "pip3"):
            (self.shims / name).write_text(
                "#!/bin/sh\necho 'no virtualenv is active here: use .venv/bin/pip' >&2\nexit 1\n"
            )
        for shim in self.shims.iterdir():
            shim.chmod(0o755)
        shared = [b for page in pages for b in ALL_BLOCKS[page] if b.checkout == "venv"]
        own = [[b for b in ALL_BLOCKS[page] if b.checkout == "page"] for page in pages]
        chains = [chain for chain in [shared, *own] if chain]
        self._results: dict[tuple[Path, int], concurrent.futures.Future[str]] = {
            (b.page, b.line): concurrent.futures.Future() for chain in chains for b in chain
        }
        self._threads = [
            threading.Thread(target=self._run, args=(chain,), name=f"checkout-{n}", daemon=True)
            for n, chain in enumerate(chains)
        ]
        for thread in self._threads:
            thread.start()

    def result(self, block: Block) -> str:
        """What the block printed, once it has run and passed its checks; or its failure."""
        future = self._results.get((block.page, block.line))
        assert future is not None, f"{block.where}: not started with the session"
        return future.result(timeout=CHECKOUT_TIMEOUT)

    def close(self) -> None:
        """Wait for the blocks, then delete the copies (virtualenvs of up to 500 MB)."""
        for thread in self._threads:
            thread.join()
        for copy in self._copies:
            shutil.rmtree(copy, ignore_errors=True)

    def _run(self, chain: list[Block]) -> None:
        shared: Path | None = None
        own: dict[Path, Path] = {}  # page -> its copy
        failed: set[Path] = set()  # pages
        for block in chain:
            future = self._results[(block.page, block.line)]
            if block.page in failed:
                future.set_exception(RuntimeError(f"{block.where}: an earlier block failed"))
                continue
            try:
                if block.checkout == "venv":
                    if shared is None:
                        shared = self._new()
                        subprocess.run(
                            [sys.executable, "-m", "venv", ".venv"],
                            cwd=shared,
                            check=True,
                            timeout=300,
                        )
                    copy, activated = shared, True
                else:
                    copy = own[block.page] = own.get(block.page) or self._new()
                    activated = False
                env = self._env(copy, activated=activated)
                future.set_result(_run_in_checkout(block, copy, env, self._logs))
            except BaseException as exc:  # pytest.fail's too: the page's test raises it
                failed.add(block.page)
                future.set_exception(exc)

    def _new(self) -> Path:
        """A new copy of the checkout, with no virtualenv."""
        copy = self._factory.mktemp("checkout")
        self._copies.append(copy)
        _copy_checkout(copy)
        return copy

    def _env(self, copy: Path, *, activated: bool) -> dict[str, str]:
        """The environment of a block run in ``copy``: no virtualenv of the suite's in it."""
        outer = [
            d
            for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not (Path(d).parent / "pyvenv.cfg").is_file()
        ]
        venv = copy / ".venv"
        head = [str(venv / "bin")] if activated else []
        env = {**os.environ, "PATH": os.pathsep.join([*head, str(self.shims), *outer])}
        for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "KAFKA_BROKERS"):
            env.pop(name, None)
        if activated:
            env["VIRTUAL_ENV"] = str(venv)
        env["PYTHONUNBUFFERED"] = "1"
        # A pytest run by a block (the README's test command, which runs the
        # whole suite) runs one small file instead: the whole suite takes
        # minutes and would run this test, and so this very block, again.
        env["PYTEST_ADDOPTS"] = INNER_PYTEST_ADDOPTS
        env[INNER_RUN] = "1"
        return env


@pytest.fixture(scope="session")
def checkouts(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Checkouts]:
    """The ``checkout`` blocks of the pages this session tests, started at once."""
    page_test = test_the_blocks_of_a_page_run_and_print_what_it_says.__name__
    pages = [
        item.callspec.params["page"]
        for item in request.session.items
        if getattr(item, "originalname", None) == page_test and hasattr(item, "callspec")
    ]
    runs = _Checkouts(tmp_path_factory, pages)
    yield runs
    runs.close()


def _run_in_checkout(block: Block, copy: Path, env: dict[str, str], logs: Path) -> str:
    """Run a ``checkout`` block's text, verbatim, then check what it installed."""
    if block.run_until is not None:
        out = _run_sh_until_stopped(block, copy, env, logs, checked=False)
    else:
        try:
            result = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", block.text],
                cwd=copy,
                env=env,
                capture_output=True,
                text=True,
                timeout=CHECKOUT_TIMEOUT,
            )
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{block.where}: still running after {exc.timeout:g} s", pytrace=False)
        assert result.returncode == 0, (
            f"{block.where}: exited with {result.returncode} in a copy of the checkout ({copy})"
            f"\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
        out = result.stdout
    if re.search(r"\bpython3? -m pytest\b", block.text):
        assert re.search(r"\b\d+ passed\b", out), f"{block.where}: pytest ran no test\n{out}"
    _check_installed(block, copy)
    return out


def _pip_installs(block: Block) -> list[str]:
    """What the ``pip install`` commands of a block install (``.``, ``.[kafka]``, ...)."""
    targets: list[str] = []
    for line in _commands(block):
        command: list[str] = []
        for word in [*shlex.split(line, comments=True), "&&"]:
            if word not in ("&&", "||", ";"):
                command.append(word)
                continue
            if command and Path(command[0]).name.startswith("python"):
                command = command[2:] if command[1:3] == ["-m", "pip"] else []
            elif command:
                command = command[1:] if Path(command[0]).name in ("pip", "pip3") else []
            if command[:1] == ["install"]:
                targets += [w for w in command[1:] if not w.startswith("-")]
            command = []
    return targets


def _wanted(block: Block, target: str, copy: Path) -> list[Any]:
    """The requirements a ``pip install`` target stands for (the project's, for ``.``)."""
    from packaging.requirements import Requirement

    project = tomllib.loads((copy / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    match = re.fullmatch(r"\.(?:\[(?P<extras>[\w,\s-]*)\])?", target)
    if match is None:
        return [Requirement(target)]
    optional = project.get("optional-dependencies", {})
    wanted = [Requirement(project["name"])]
    texts = list(project.get("dependencies", []))
    todo = [e.strip() for e in (match["extras"] or "").split(",") if e.strip()]
    seen: set[str] = set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        assert extra in optional, f"{block.where}: pyproject.toml has no extra {extra!r}"
        for text in optional[extra]:
            requirement = Requirement(text)
            if requirement.name == project["name"]:
                todo += sorted(requirement.extras)
            else:
                texts.append(text)
    for text in texts:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate():
            wanted.append(requirement)
    return wanted


#: Run by the copy's ``.venv/bin/python``: the versions of the distributions
#: named, whether their top-level modules import, and where aiowax is.
_INSTALLED = """
import importlib, importlib.metadata as md, json, re, sys
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
modules = {}
for module, dists in md.packages_distributions().items():
    for dist in dists:
        modules.setdefault(norm(dist), set()).add(module)
versions, failed = {}, {}
for name in json.loads(sys.argv[1]):
    try:
        versions[name] = md.version(name)
    except md.PackageNotFoundError:
        versions[name] = None
        continue
    for module in sorted(modules.get(norm(name), ())):
        if module.isidentifier() and not module.startswith("_"):
            try:
                importlib.import_module(module)
            except Exception as exc:
                failed[module] = repr(exc)
import aiowax
print(json.dumps({"versions": versions, "failed": failed, "aiowax": aiowax.__file__}))
"""


def _check_installed(block: Block, copy: Path) -> None:
    """What the block's ``pip install`` commands named is in the copy's ``.venv``, and imports."""
    targets = _pip_installs(block)
    if not targets:
        return
    wanted = [r for target in targets for r in _wanted(block, target, copy)]
    python = copy / ".venv" / "bin" / "python"
    assert python.is_file(), f"{block.where}: it installs packages, but {copy}/.venv is missing"
    names = sorted({r.name for r in wanted})
    result = subprocess.run(
        [str(python), "-c", _INSTALLED, json.dumps(names)],
        cwd=copy.parent,  # not the copy: aiowax must come from the virtualenv
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
    )
    assert result.returncode == 0, f"{block.where}: the check of its installs\n{result.stderr}"
    found = json.loads(result.stdout)
    for requirement in wanted:
        version = found["versions"][requirement.name]
        assert version is not None, (
            f"{block.where}: {requirement.name} is not installed in the copy's .venv "
            f"(the block installs {targets})"
        )
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{block.where}: {requirement.name} {version} does not satisfy {requirement}"
        )
    assert not found["failed"], f"{block.where}: installed but do not import: {found['failed']}"
    assert Path(found["aiowax"]).resolve().is_relative_to(copy.resolve()), (
        f"{block.where}: aiowax comes from {found['aiowax']}, not from the copy {copy}"
    )


# -- a page's session ------------------------------------------------------------------


class _Page:
    """One page's session: its module namespace, event loop and directory."""

    def __init__(self, page: Path, workdir: Path) -> None:
        self.page = page
        self.workdir = workdir
        name = "docs_page_" + re.sub(r"\W", "_", _page_id(page))
        self.module = types.ModuleType(name)
        self.module.__file__ = str(workdir / f"{name}.py")
        self.runner = asyncio.Runner()

    def run_python(self, block: Block) -> str:
        header = FILE_HEADER.match(block.text.splitlines()[0]) if block.text.strip() else None
        if header:
            assert ".." not in header["name"].split("/"), f"{block.where}: a file outside"
            path = self.workdir / header["name"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text, encoding="utf-8")
            if _is_pytest_file(path.name):
                return ""  # pytest runs it, after the page
        if "subprocess" in block.markers:
            return self._run_in_a_process(block)
        # Named after the block, and in linecache, so tracebacks show its lines.
        filename = f"<{block.where}>"
        linecache.cache[filename] = (len(block.text), None, block.text.splitlines(True), filename)
        code = compile(
            block.text, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            if block.run_until is None:
                result = eval(code, self.module.__dict__)
                if asyncio.iscoroutine(result):
                    self.runner.run(result)
            elif code.co_flags & inspect.CO_COROUTINE:
                self.runner.run(_cancelled_when_due(eval(code, self.module.__dict__), block))
            else:
                with _fixed_ports():
                    _check_ports_free(block, block.run_until[1])
                    _stopped_by_sigterm(lambda: eval(code, self.module.__dict__), block)
        return out.getvalue()

    def _run_in_a_process(self, block: Block) -> str:
        script = self.workdir / f"_block_{block.line}.py"
        script.write_text(block.text, encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-W", "error", script.name],
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, (
            f"{block.where}: exited with {result.returncode}\n{result.stderr}"
        )
        return result.stdout


def _is_pytest_file(name: str) -> bool:
    return name == "conftest.py" or name.startswith("test_")


def _workdir(tmp_path: Path) -> tuple[Path, Path]:
    workdir = tmp_path / "work"
    workdir.mkdir()
    shutil.copytree(ROOT / "examples", workdir / "examples", ignore=_no_cache)
    shutil.copytree(DOCS / "examples", workdir / "docs" / "examples", ignore=_no_cache)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    # A wrapper, not a symlink: a symlink outside the venv loses the venv.
    (bindir / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (bindir / "python").chmod(0o755)
    for script in ("aiowax", "uvicorn"):
        (bindir / script).symlink_to(Path(sys.executable).parent / script)
    return workdir, bindir


_no_cache = shutil.ignore_patterns("__pycache__")


def _pages_with_code() -> list[Path]:
    """The pages to run, those with ``checkout`` blocks last: their blocks start with the
    session, in the background, and are mostly done by the time their pages come."""
    pages = [p for p, blocks in ALL_BLOCKS.items() if any(b.lang in CODE_LANGS for b in blocks)]
    return sorted(pages, key=lambda p: any(b.checkout for b in ALL_BLOCKS[p]))


def _from_workdir(module: types.ModuleType, workdir: Path) -> bool:
    """Whether a module (or a namespace package) comes from the page's directory."""
    places = [getattr(module, "__file__", None) or ""]
    places += list(getattr(module, "__path__", None) or [])
    return any(str(place).startswith(str(workdir)) for place in places)


#: Loggers that a server run in a page configures (uvicorn's ``dictConfig``).
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


@contextlib.contextmanager
def _logging_restored() -> Iterator[None]:
    saved = {}
    for name in _SERVER_LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
    try:
        yield
    finally:
        for name, (handlers, level, propagate, disabled) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
            logger.disabled = disabled


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", _pages_with_code(), ids=_page_id)
def test_the_blocks_of_a_page_run_and_print_what_it_says(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkouts: _Checkouts
) -> None:
    workdir, bindir = _workdir(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    monkeypatch.delenv("KAFKA_BROKERS", raising=False)
    modules_before = set(sys.modules)
    session = _Page(page, workdir)
    sys.modules[session.module.__name__] = session.module
    kafka = _PageKafka(monkeypatch)
    blocks = ALL_BLOCKS[page]
    try:
        with _logging_restored():
            ran = _run_the_blocks(blocks, session, kafka, workdir, bindir, logs, checkouts)
        code = [b for b in blocks if b.lang in CODE_LANGS]
        assert ran == code, f"{_page_id(page)}: not every code block ran"
        tests = sorted(workdir.glob("test_*.py"))
        if tests:
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"]
                + ["-o", "asyncio_mode=strict", "-o", "asyncio_default_fixture_loop_scope=function"]
                + [t.name for t in tests],
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=240,
            )
            assert result.returncode == 0, (
                f"{_page_id(page)}: its tests fail\n{result.stdout}\n{result.stderr}"
            )
    finally:
        session.runner.close()
        kafka.stop()
        for name in set(sys.modules) - modules_before:
            if name == session.module.__name__ or _from_workdir(sys.modules[name], workdir):
                del sys.modules[name]


def _run_the_blocks(
    blocks: list[Block],
    session: _Page,
    kafka: _PageKafka,
    workdir: Path,
    bindir: Path,
    logs: Path,
    checkouts: _Checkouts,
) -> list[Block]:
    """Run the page's blocks in order; the code blocks run, in order."""
    ran: list[Block] = []
    previous: tuple[Block, str] | None = None
    for block in blocks:
        if block.is_output:
            assert previous is not None, f"{block.where}: output of nothing"
            _compare(previous[0], block, previous[1])
            previous = None
            continue
        previous = None
        if block.lang == "properties":
            header = PROPERTIES_HEADER.match(block.text.splitlines()[0]) if block.text else None
            if header:
                (workdir / header["name"]).write_text(block.text, encoding="utf-8")
        if block.lang not in CODE_LANGS:
            continue
        ran.append(block)
        topics = block.kafka_topics
        if topics is not None:
            kafka.prepare(topics)
        if block.checkout is not None:
            previous = (block, checkouts.result(block))
        elif block.lang == "python":
            previous = (block, session.run_python(block))
        elif block.run_until is not None:
            previous = (block, _run_sh_until_stopped(block, workdir, _sh_env(bindir), logs))
        else:
            previous = (block, _run_sh(block, workdir, bindir))
    return ran


def test_the_tally_of_the_code_blocks() -> None:
    """How many code blocks run, and how: the report of this test shows it with ``-s``."""
    ways: dict[str, int] = {}
    for b in _all_blocks():
        if b.lang not in CODE_LANGS:
            continue
        way = f"in a copy of the checkout ({b.checkout})" if b.checkout else b.lang
        ways[way] = ways.get(way, 0) + 1
    print(f"\n{sum(ways.values())} code blocks, all run:")
    for way, count in sorted(ways.items()):
        print(f"  {count:3} {way}")
    assert ways
