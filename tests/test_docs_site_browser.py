"""The documentation site, built from ``docs/`` and read in headless Chromium.

The test builds the site with ``mkdocs build --strict`` into a temporary
directory, serves it over HTTP on the loopback interface (a thread of
``http.server``), and opens the home page and an API page in Chromium
(`browser_helpers`). It checks what a reader sees, not the HTML's shape:
the page titles of the navigation, the first flow of the home page, an API
page with its module's functions and their docstrings, search answering a
query, and that no page asks anything of the internet (every request
stays on the loopback server). Screenshots go to ``artifacts/docs-*.png``.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from browser_helpers import CHROMIUM, CHROMIUM_ARGS, screenshot, sync_api

ROOT = Path(__file__).resolve().parents[1]
#: Titles the navigation must show: the pages issue 15 lists.
NAV_TITLES = [
    "Getting started",
    "Concepts",
    "Windows",
    "Keyed state",
    "Recovery",
    "Connectors",
    "Kafka",
    "Embedding in web services",
    "Testing",
    "Cluster mode on Kafka",
    "Deploying copies",
    "Stats",
    "Metrics",
    "Migrating from Bytewax",
    "API reference",
]
DEADLINE_MS = 15_000


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site, built strict and served on 127.0.0.1: its base URL."""
    out = tmp_path_factory.mktemp("site")
    mkdocs = Path(sys.executable).with_name("mkdocs")
    if not mkdocs.exists():
        pytest.fail(f"{mkdocs} is missing: the docs extra is part of the test extra")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "--quiet", "-d", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    handler = functools.partial(_QuietHandler, directory=str(out))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def browser(site: str) -> Iterator[Any]:
    api = sync_api()
    with api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()


def _open(browser: Any, url: str, site: str) -> tuple[Any, list[str]]:
    """A page at ``url``, and the list of requests it made that left ``site``."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(DEADLINE_MS)
    outside: list[str] = []

    def seen(request: Any) -> None:
        if not request.url.startswith((site, "data:", "blob:")):
            outside.append(request.url)

    page.on("request", seen)
    response = page.goto(url, wait_until="networkidle")
    assert response is not None and response.status == 200, url
    return page, outside


@pytest.mark.timeout(180)
def test_the_home_page_shows_the_guide_and_a_first_flow(
    site: str, browser: Any, record_property: Any, capsys: Any
) -> None:
    page, outside = _open(browser, site, site)
    try:
        assert page.title().startswith("aiowax")
        nav = page.inner_text("nav.md-nav--primary")
        missing = [t for t in NAV_TITLES if t not in nav]
        assert not missing, f"not in the navigation: {missing}"
        content = page.inner_text("article")
        assert "A first flow" in content
        assert "from aiowax.dataflow import Dataflow" in content
        # Search works offline: its index is the site's own. The search
        # worker loads that index after the page; a query typed before it
        # is ready gets no answer, so type it again until one comes.
        box = page.locator("input.md-search__input")
        box.click()
        for _ in range(20):
            box.fill("")
            box.press_sequentially("tumbling")
            try:
                page.wait_for_selector(".md-search-result__item", timeout=1_500)
                break
            except sync_api().TimeoutError:
                continue
        hits = page.inner_text(".md-search-result")
        assert "Windows" in hits
        page.keyboard.press("Escape")
        screenshot(page, "docs-home.png", record_property, capsys)
        assert outside == [], f"the home page loaded from outside the site: {outside}"
    finally:
        page.close()


@pytest.mark.timeout(180)
def test_an_api_page_shows_the_module_from_its_docstrings(
    site: str, browser: Any, record_property: Any, capsys: Any
) -> None:
    import aiowax.visualize

    page, outside = _open(browser, f"{site}api/visualize/", site)
    try:
        content = page.inner_text("article")
        assert "aiowax.visualize" in content
        for name in aiowax.visualize.__all__:
            doc = getattr(aiowax.visualize, name).__doc__
            assert name in content, name
            # The first line of each public name's docstring is on the page.
            first = (doc or "").strip().splitlines()[0].rstrip(".")
            assert first and first.split("`")[0].strip() in content, (name, first)
        screenshot(page, "docs-api-visualize.png", record_property, capsys)
        assert outside == [], f"the API page loaded from outside the site: {outside}"
    finally:
        page.close()
