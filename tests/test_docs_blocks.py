"""Every code block of the docs runs, and prints what the docs say it prints.

The rules (docs/contributing.md says the same for the writers of pages):

- Every fenced block names its language. ``python``, ``sh`` and ``console``
  blocks are code; ``text``, ``json``, ``yaml``, ``toml`` and ``mermaid``
  are data (``json``, ``yaml`` and ``toml`` must parse).
- The ``python`` blocks of one page run in order, in one namespace (a module
  of its own), like a doctest session. Top-level ``await`` works: the page
  has one event loop, on which such blocks run; the others run outside it,
  so ``run_main`` works there. The working directory is a fresh temporary
  directory holding a copy of ``examples/`` and ``docs/examples/``, and it is
  importable.
- A block whose only line is ``--8<-- "docs/examples/NAME"`` (pymdownx
  snippets, as the site includes it) stands for that file's text.
- A ``python`` block whose first line is ``# NAME.py`` is also saved as
  ``NAME.py`` in the working directory (so later blocks may import it, and
  commands may run it). ``test_*.py`` and ``conftest.py`` files are only
  saved: once the page's blocks have run, pytest runs the page's tests
  there, and they must pass.
- ``sh`` and ``console`` blocks run with ``bash`` in the same working
  directory, where ``python`` is this interpreter. Their commands may only
  be ``python -m aiowax...``, ``aiowax``, ``sort`` and ``cat``; each must
  exit with 0.
- A block right after ``<!-- output -->`` is what the block before it
  printed to stdout: compared line by line, trailing spaces ignored, with
  ``...`` matching anything (doctest's ELLIPSIS); a ``json`` one is
  compared as parsed JSON.
- A block right after ``<!-- not-run: REASON -->`` is not run (a ``python``
  block is still compiled, a ``sh`` one still parsed by ``bash -n``); the
  reason is required. Code that cannot run here (a pip install, a Kafka
  cluster, a server...) must say so this way.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import doctest
import importlib
import io
import json
import linecache
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [*sorted(p for p in DOCS.rglob("*.md")), ROOT / "README.md"]

CODE_LANGS = {"python", "sh", "console"}
DATA_LANGS = {"text", "json", "yaml", "toml", "mermaid"}
ALLOWED_COMMANDS = {"aiowax", "sort", "cat"}

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)(?P<lang>[^\s`]*)[^`]*$")
MARKER = re.compile(r"^\s*<!--\s*(?P<kind>output|not-run)\s*(?::\s*(?P<reason>.*?))?\s*-->\s*$")
SNIPPET = re.compile(r'^--8<--\s+"(?P<path>[^"]+)"\s*$')
FILE_HEADER = re.compile(r"^# (?P<name>[\w.-]+\.py)\s*$")


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str  # snippets expanded
    marker: str | None  # "output", "not-run" or None
    reason: str | None
    snippet: str | None  # the included file, if the block is a snippet

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


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
        # The marker is the last non-blank line before the fence.
        before = start - 1
        while before >= 0 and not lines[before].strip():
            before -= 1
        marker = MARKER.match(lines[before]) if before >= 0 else None
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
                marker=marker["kind"] if marker else None,
                reason=marker["reason"] if marker else None,
                snippet=snippet,
            )
        )
    return blocks


ALL_BLOCKS = {page: parse_blocks(page) for page in PAGES}


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


# -- checks on the markup ---------------------------------------------------------


def test_every_block_names_a_known_language() -> None:
    bad = [
        f"{b.where}: ```{b.lang}"
        for blocks in ALL_BLOCKS.values()
        for b in blocks
        if b.lang not in CODE_LANGS | DATA_LANGS
    ]
    assert not bad, f"fences need one of {sorted(CODE_LANGS | DATA_LANGS)}: {bad}"


def test_every_skipped_block_says_why() -> None:
    for blocks in ALL_BLOCKS.values():
        for b in blocks:
            if b.marker == "not-run":
                assert b.reason, f"{b.where}: <!-- not-run: REASON --> needs a reason"
                assert b.lang in CODE_LANGS, f"{b.where}: only code blocks are run or not run"
            if b.marker == "output":
                assert b.reason is None, f"{b.where}: <!-- output --> takes no reason"


def test_every_output_block_follows_a_block_that_runs() -> None:
    for blocks in ALL_BLOCKS.values():
        for before, b in zip([None, *blocks], blocks, strict=False):
            if b.marker != "output":
                continue
            assert b.lang in DATA_LANGS, f"{b.where}: an output block is text, json or mermaid"
            assert before is not None, f"{b.where}: output of nothing"
            assert before.lang in CODE_LANGS and before.marker is None, (
                f"{b.where}: an output block must follow a block that runs ({before.where})"
            )


def test_snippets_come_from_docs_examples_and_every_example_is_shown() -> None:
    included = {
        b.snippet for blocks in ALL_BLOCKS.values() for b in blocks if b.snippet is not None
    }
    for path in included:
        assert path.startswith("docs/examples/"), f"snippet {path!r}: keep them in docs/examples"
    examples = {
        str(p.relative_to(ROOT))
        for p in (DOCS / "examples").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert examples - included == set(), "examples no page includes"


def test_data_blocks_parse() -> None:
    for blocks in ALL_BLOCKS.values():
        for b in blocks:
            if b.lang == "json" and "..." not in b.text:
                json.loads(b.text)
            elif b.lang == "yaml":
                yaml.safe_load(b.text)
            elif b.lang == "toml":
                tomllib.loads(b.text)


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


def _check_allowed(block: Block, command: str) -> None:
    for part in re.split(r"\|", command):
        words = shlex.split(part, comments=True)
        if not words:
            continue
        if words[0] == "python":
            ok = len(words) > 2 and words[1] == "-m" and words[2].split(".")[0] == "aiowax"
        else:
            ok = words[0] in ALLOWED_COMMANDS
        assert ok, (
            f"{block.where}: {part.strip()!r} is not an aiowax command the docs test runs; "
            "mark the block <!-- not-run: REASON --> if it cannot run here"
        )


def _run_sh(block: Block, workdir: Path, bindir: Path) -> str:
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)
    out = []
    for command in _commands(block):
        _check_allowed(block, command)
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
            (self.workdir / header["name"]).write_text(block.text, encoding="utf-8")
            if _is_pytest_file(header["name"]):
                return ""  # pytest runs it, after the page
        # Named after the block, and in linecache, so tracebacks show its lines.
        filename = f"<{block.where}>"
        linecache.cache[filename] = (len(block.text), None, block.text.splitlines(True), filename)
        code = compile(
            block.text, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True
        )
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            result = eval(code, self.module.__dict__)
            if asyncio.iscoroutine(result):
                self.runner.run(result)
        return out.getvalue()


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
    (bindir / "aiowax").symlink_to(Path(sys.executable).parent / "aiowax")
    return workdir, bindir


_no_cache = shutil.ignore_patterns("__pycache__")


def _pages_with_code() -> list[Path]:
    return [p for p, blocks in ALL_BLOCKS.items() if any(b.lang in CODE_LANGS for b in blocks)]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("page", _pages_with_code(), ids=_page_id)
def test_the_blocks_of_a_page_run_and_print_what_it_says(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workdir, bindir = _workdir(tmp_path)
    monkeypatch.chdir(workdir)
    monkeypatch.syspath_prepend(str(workdir))
    modules_before = set(sys.modules)
    session = _Page(page, workdir)
    sys.modules[session.module.__name__] = session.module
    blocks = ALL_BLOCKS[page]
    try:
        previous: tuple[Block, str] | None = None
        for block in blocks:
            if block.marker == "output":
                assert previous is not None, f"{block.where}: output of nothing"
                _compare(previous[0], block, previous[1])
                previous = None
                continue
            previous = None
            if block.lang not in CODE_LANGS:
                continue
            if block.marker == "not-run":
                if block.lang == "python":
                    compile(block.text, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
                else:
                    parsed = subprocess.run(["bash", "-n"], input=block.text, text=True)
                    assert parsed.returncode == 0, f"{block.where}: not valid sh"
                continue
            if block.lang == "python":
                previous = (block, session.run_python(block))
            else:
                previous = (block, _run_sh(block, workdir, bindir))
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
        for name in set(sys.modules) - modules_before:
            module = sys.modules[name]
            file = getattr(module, "__file__", None) or ""
            if name == session.module.__name__ or file.startswith(str(workdir)):
                del sys.modules[name]


def test_every_code_block_runs_or_says_why_not() -> None:
    """The tally of the blocks, which the report of this test shows with ``-s``."""
    ran = skipped = 0
    reasons: dict[str, int] = {}
    for blocks in ALL_BLOCKS.values():
        for b in blocks:
            if b.lang not in CODE_LANGS:
                continue
            if b.marker == "not-run":
                skipped += 1
                reasons[b.reason or ""] = reasons.get(b.reason or "", 0) + 1
            else:
                ran += 1
    print(f"\n{ran} code blocks run, {skipped} not run:")
    for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
        print(f"  {count:3}  {reason}")
    assert ran > skipped
