"""The seed's examples, with ``bytewax`` replaced by ``aiowax``, run as doctests.

The seed (``shared/spec/dataflow-api.txt``, beside the checkout) is the pdoc
text of the reference ``Dataflow`` class. Every method section that holds
``>>>`` examples becomes one test here.
"""

from __future__ import annotations

import doctest
import re
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import pytest

import aiowax.dataflow

#: Where tests/conftest.py's ``SPEC_DIR`` points: the shared folder beside the checkout.
SPEC_DIR = Path(__file__).resolve().parents[2] / "shared" / "spec"
SEED = SPEC_DIR / "dataflow-api.txt"

FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS

#: A method section of the pdoc text starts with a line like
#: "    `map(self, /, step_id, mapper)`".
SECTION_HEADER = re.compile(r"^    `(?P<name>\w+)\(self, /(?P<params>(?:, \w+)*)\)`$", re.MULTILINE)

#: The seed methods that carry an example, as of the seed this was written for.
METHODS_WITH_EXAMPLES = frozenset(
    {
        "filter",
        "filter_map",
        "flat_map",
        "fold_window",
        "inspect",
        "inspect_epoch",
        "map",
        "reduce",
        "reduce_window",
        "stateful_map",
    }
)


class Section:
    """One method section of the seed: its name, first line and text."""

    def __init__(self, name: str, params: tuple[str, ...], lineno: int, text: str) -> None:
        self.name = name
        self.params = params
        self.lineno = lineno  # 0-based line of the header in the seed
        self.text = text

    def has_example(self) -> bool:
        return any(line.lstrip().startswith(">>>") for line in self.text.splitlines())


def split_sections(seed_text: str) -> dict[str, Section]:
    """Cut the seed into its method sections, keyed by method name."""
    headers = list(SECTION_HEADER.finditer(seed_text))
    sections: dict[str, Section] = {}
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        end = following.start() if following is not None else len(seed_text)
        params = tuple(p.strip() for p in header["params"].split(",") if p.strip())
        lineno = seed_text.count("\n", 0, header.start())
        sections[header["name"]] = Section(
            header["name"], params, lineno, seed_text[header.start() : end]
        )
    return sections


def as_aiowax(text: str) -> str:
    """Turn the reference's imports into ours."""
    return text.replace("bytewax", "aiowax")


class _RecordingRunner(doctest.DocTestRunner):
    """A doctest runner that remembers, in order, which examples went wrong."""

    def __init__(self) -> None:
        super().__init__(verbose=False, optionflags=FLAGS)
        self.problems: list[
            tuple[doctest.Example, tuple[type[BaseException], BaseException, TracebackType] | None]
        ] = []

    def report_failure(
        self,
        out: Callable[[str], object],
        test: doctest.DocTest,
        example: doctest.Example,
        got: str,
    ) -> None:
        self.problems.append((example, None))
        super().report_failure(out, test, example, got)

    def report_unexpected_exception(
        self,
        out: Callable[[str], object],
        test: doctest.DocTest,
        example: doctest.Example,
        exc_info: tuple[type[BaseException], BaseException, TracebackType],
    ) -> None:
        self.problems.append((example, exc_info))
        super().report_unexpected_exception(out, test, example, exc_info)


def run_doctest(text: str, name: str, filename: str, lineno: int) -> int:
    """Run the examples of ``text`` as a doctest; return how many ran.

    If the first example that goes wrong raised an exception it did not
    expect, that exception is re-raised, with doctest's report as a note, so
    the test shows the real error. A wrong output fails the test with
    doctest's report.
    """
    globs = vars(aiowax.dataflow).copy()  # the examples rely on the module's globals
    assert "Dataflow" in globs
    test = doctest.DocTestParser().get_doctest(text, globs, name, filename, lineno)
    runner = _RecordingRunner()
    report: list[str] = []
    # doctest swaps sys.stdout for its own buffer while examples run, so what
    # they print (StdOutSink looks sys.stdout up when it writes) is compared.
    result = runner.run(test, out=report.append)
    if result.failed:
        _, exc_info = runner.problems[0]
        text_report = "".join(report)
        if exc_info is not None:
            error = exc_info[1]
            error.add_note(f"doctest report of {name}:\n{text_report}")
            raise error.with_traceback(exc_info[2])
        pytest.fail(f"doctest {name} failed:\n{text_report}", pytrace=False)
    return result.attempted


def _example_params() -> list[object]:
    if not SEED.is_file():
        reason = f"the seed spec {SEED} is absent (the checkout is not beside shared/spec)"
        return [pytest.param(None, id="seed-absent", marks=pytest.mark.skip(reason=reason))]
    params: list[object] = []
    for name, section in split_sections(SEED.read_text(encoding="utf-8")).items():
        if not section.has_example():
            continue
        params.append(pytest.param(section, id=name))
    return params


@pytest.mark.parametrize("section", _example_params())
def test_seed_example_passes_as_doctest(
    section: Section, capsys: pytest.CaptureFixture[str]
) -> None:
    attempted = run_doctest(
        as_aiowax(section.text),
        name=f"Dataflow.{section.name}",
        filename=str(SEED),
        lineno=section.lineno,
    )
    assert attempted > 0
    # Everything the examples printed went to doctest, none of it past it.
    assert capsys.readouterr().out == ""


def test_seed_sections_and_examples_are_all_found() -> None:
    if not SEED.is_file():
        pytest.skip(f"the seed spec {SEED} is absent")
    sections = split_sections(SEED.read_text(encoding="utf-8"))
    assert len(sections) == 16, sorted(sections)
    with_examples = {name for name, s in sections.items() if s.has_example()}
    assert with_examples == METHODS_WITH_EXAMPLES


def test_seed_examples_mention_no_bytewax_after_translation() -> None:
    if not SEED.is_file():
        pytest.skip(f"the seed spec {SEED} is absent")
    for section in split_sections(SEED.read_text(encoding="utf-8")).values():
        assert "bytewax" not in as_aiowax(section.text)


# -- the harness itself: a broken example must fail the test ---------------

_PRINTING_EXAMPLE = """
    >>> from aiowax.connectors.stdio import StdOutSink
    >>> from aiowax.testing import run_main, TestingSource
    >>> flow = Dataflow()
    >>> flow.input("inp", TestingSource(["a", "b"]))
    >>> flow.output("out", StdOutSink())
    >>> run_main(flow)
    {expected}
"""


def test_harness_passes_an_example_whose_printed_output_matches(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _PRINTING_EXAMPLE.format(expected="a\n    b")
    assert run_doctest(text, "harness-ok", "<harness>", 0) == 6
    assert capsys.readouterr().out == ""


def test_harness_fails_an_example_whose_printed_output_differs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    text = _PRINTING_EXAMPLE.format(expected="a\n    c")
    with pytest.raises(pytest.fail.Exception) as failed:
        run_doctest(text, "harness-wrong-output", "<harness>", 0)
    message = str(failed.value)
    assert "Expected:" in message
    # The printed items were captured by doctest and shown as what it got.
    assert "Got:\n    a\n    b" in message
    assert capsys.readouterr().out == ""


def test_harness_reraises_an_unexpected_exception_with_its_type() -> None:
    text = """
    >>> flow = Dataflow()
    >>> flow.map("m", 3)
    >>> print("not reached")
    not reached
    """
    with pytest.raises(TypeError, match="mapper must be callable") as raised:
        run_doctest(text, "harness-raises", "<harness>", 0)
    assert any("harness-raises" in note for note in raised.value.__notes__)


def test_harness_fails_when_a_missing_operator_is_used() -> None:
    text = """
    >>> flow = Dataflow()
    >>> flow.not_an_operator("x")
    """
    with pytest.raises(AttributeError):
        run_doctest(text, "harness-missing", "<harness>", 0)
