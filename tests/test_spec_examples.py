"""The reference's examples, with ``bytewax`` replaced by ``aiowax``, run as doctests.

``tests/data/dataflow_examples.txt`` holds the usage examples of the
reference ``Dataflow`` class (code only), one section per method. Every
section that holds ``>>>`` examples becomes one test here.

In the project's workspace the reference text itself (the pdoc text of
Bytewax's ``Dataflow``) sits beside the checkout; there, one more test checks
that the copy in ``tests/data`` still matches it.
"""

from __future__ import annotations

import ast
import doctest
import re
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import pytest

import aiowax.dataflow
from aiowax.dataflow import Dataflow

#: The reference's examples, kept in the repository.
EXAMPLES = Path(__file__).resolve().parent / "data" / "dataflow_examples.txt"

#: The reference text, only present in the project's workspace.
SPEC = Path(__file__).resolve().parents[2] / "shared" / "spec" / "dataflow-api.txt"

FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS

#: A section of the examples file starts with a line like "## map(step_id, mapper)".
EXAMPLES_HEADER = re.compile(r"^## (?P<name>\w+)\((?P<params>[\w, ]*)\)$", re.MULTILINE)

#: A method section of the reference's pdoc text starts with a line like
#: "    `map(self, /, step_id, mapper)`".
SPEC_HEADER = re.compile(r"^    `(?P<name>\w+)\(self, /(?P<params>(?:, \w+)*)\)`$", re.MULTILINE)

#: The methods whose reference documentation carries an example.
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
    """One method section: its name, parameters, first line and text."""

    def __init__(self, name: str, params: tuple[str, ...], lineno: int, text: str) -> None:
        self.name = name
        self.params = params
        self.lineno = lineno  # 0-based line of the header in its file
        self.text = text

    def has_example(self) -> bool:
        return bool(self.examples())

    def examples(self) -> list[doctest.Example]:
        return doctest.DocTestParser().get_examples(self.text)


def split_sections(text: str, header: re.Pattern[str] = EXAMPLES_HEADER) -> dict[str, Section]:
    """Cut ``text`` into its method sections, keyed by method name."""
    headers = list(header.finditer(text))
    sections: dict[str, Section] = {}
    for found, following in zip(headers, [*headers[1:], None], strict=True):
        end = following.start() if following is not None else len(text)
        params = tuple(p.strip() for p in found["params"].split(",") if p.strip())
        lineno = text.count("\n", 0, found.start())
        sections[found["name"]] = Section(found["name"], params, lineno, text[found.start() : end])
    return sections


def example_sections() -> dict[str, Section]:
    return split_sections(EXAMPLES.read_text(encoding="utf-8"))


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


@pytest.mark.parametrize(
    "section",
    [pytest.param(s, id=name) for name, s in example_sections().items() if s.has_example()],
)
def test_reference_example_passes_as_doctest(
    section: Section, capsys: pytest.CaptureFixture[str]
) -> None:
    attempted = run_doctest(
        section.text,
        name=f"Dataflow.{section.name}",
        filename=str(EXAMPLES),
        lineno=section.lineno,
    )
    assert attempted > 0
    # Everything the examples printed went to doctest, none of it past it.
    assert capsys.readouterr().out == ""


def test_every_method_has_a_section_and_the_expected_ones_have_examples() -> None:
    sections = example_sections()
    builders = {
        name
        for name, member in vars(Dataflow).items()
        if not name.startswith("_") and not isinstance(member, property)  # steps, name
    }
    assert set(sections) == builders
    assert len(sections) == 16
    with_examples = {name for name, s in sections.items() if s.has_example()}
    assert with_examples == METHODS_WITH_EXAMPLES


def test_the_examples_import_aiowax_only() -> None:
    for section in example_sections().values():
        for example in section.examples():
            assert "bytewax" not in example.source.lower(), (section.name, example.source)


def _comparable(section: Section) -> tuple[tuple[str, ...], list[tuple[str, str]]]:
    """A section's parameters and examples, without comments or layout."""
    examples = [
        (ast.dump(ast.parse(e.source)), " ".join(e.want.split())) for e in section.examples()
    ]
    return section.params, examples


if SPEC.is_file():
    # Only where the reference text is at hand (the project's workspace): a
    # user's clone has tests/data alone, and nothing to skip or explain.

    def test_the_examples_file_matches_the_reference_text() -> None:
        reference = split_sections(as_aiowax(SPEC.read_text(encoding="utf-8")), SPEC_HEADER)
        copied = example_sections()
        assert list(copied) == list(reference)
        for name, section in reference.items():
            assert _comparable(copied[name]) == _comparable(section), name


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
