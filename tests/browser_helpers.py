"""Headless Chromium for the browser tests: Debian's ``chromium``, driven by Playwright.

Playwright's own browser download (``playwright install``) is never used:
the tests launch ``/usr/bin/chromium``. Without it or without Playwright a
browser test is skipped, unless ``AIOWAX_REQUIRE_BROWSER=1`` (as ``.ci/run``
sets), where it fails. Screenshots go to ``artifacts/`` and their paths to
the log.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
INSTALL_HINT = (
    "apt-get install chromium (Debian's package) and pip install playwright; "
    "never 'playwright install': the test drives /usr/bin/chromium"
)
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def sync_api() -> Any:
    """Playwright's sync API, or skip (fail under AIOWAX_REQUIRE_BROWSER=1)."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} is missing")
    try:
        api = importlib.import_module("playwright.sync_api")
    except ImportError:
        api = None
        missing.append("playwright is not installed")
    if missing:
        message = f"no headless browser: {'; '.join(missing)}. Install: {INSTALL_HINT}"
        if os.environ.get("AIOWAX_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return api


def screenshot(page: Any, name: str, record_property: Any, capsys: Any) -> Path:
    """Save the whole page as ``artifacts/NAME`` and print the path to the log."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    record_property(f"screenshot {name}", str(path))
    # Past pytest's capture, so the path is in the CI log with or without -s.
    with capsys.disabled():
        print(f"\nscreenshot: {path}", file=sys.__stderr__, flush=True)
    return path
