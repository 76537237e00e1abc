"""The examples of the docs run, so the docs cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parents[1] / "docs"
CODE = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _blocks(name: str) -> list[str]:
    return CODE.findall((DOCS / name).read_text(encoding="utf-8"))


def test_the_testing_guide_example_passes_as_written(pytester: pytest.Pytester) -> None:
    example = next(b for b in _blocks("testing.md") if b.startswith("# test_page_views.py"))
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings =\n    error\n    ignore::pytest.PytestAssertRewriteWarning\n"
    )
    pytester.makepyfile(test_page_views=example)
    result = pytester.runpytest("-p", "aiowax.pytest_plugin", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
