"""The live page in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

The flow and a uvicorn server of its `live_app` run on an event loop in a
thread (an anyio blocking portal); the test drives the browser from the main
thread with Playwright's sync API, feeds the flow through the portal, and
waits on the DOM (``wait_for_function``: a condition polled under a
deadline) for what it expects: every step id, counts that grow, a full
channel drawn red, the flow's error in the header. Screenshots go to
``artifacts/`` and their paths to the log; how the browser is found and
when the test skips: `browser_helpers`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal

import browser_helpers
from aiowax.asgi import live_app
from browser_helpers import CHROMIUM, CHROMIUM_ARGS, screenshot, sync_api
from live_helpers import STEP_IDS, DemoFlow, HotKeyFlow, running, serving

#: Milliseconds Playwright waits for a condition of the page.
DEADLINE_MS = 15_000


def _field(page: Any, step_id: str, field: str) -> float:
    value = page.get_attribute(f'[data-step-id="{step_id}"] [data-field="{field}"]', "data-value")
    assert value is not None, (step_id, field)
    return float(value)


def _wait_field(page: Any, step_id: str, field: str, op: str, than: float) -> float:
    """Wait until the page shows ``field`` of ``step_id`` ``op`` ``than``; return it.

    (The page's CSP forbids eval, so the condition travels as data.)
    """
    assert op in (">=", ">", "==")
    page.wait_for_function(
        """([step, field, op, than]) => {
            const el = document.querySelector(`[data-step-id="${step}"] [data-field="${field}"]`);
            if (!el || el.dataset.value === undefined) return false;
            const v = Number(el.dataset.value);
            return op === ">=" ? v >= than : op === ">" ? v > than : v === than;
        }""",
        arg=[step_id, field, op, than],
    )
    return _field(page, step_id, field)


@contextmanager
def _live_page(
    build: Callable[[], Awaitable[Any]],
) -> Iterator[tuple[BlockingPortal, Any, Any, list[str]]]:
    """A flow made by ``build`` (on the portal's loop), running and served, and a page on it.

    Yields the portal, the flow's object, the page and the list of the
    page's script errors; the flow is aborted at the end.
    """
    api = sync_api()
    with start_blocking_portal() as portal:
        demo = portal.call(build)
        with (
            portal.wrap_async_context_manager(running(demo)) as handle,
            portal.wrap_async_context_manager(serving(live_app(handle))) as url,
            api.sync_playwright() as playwright,
        ):
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.set_default_timeout(DEADLINE_MS)
                errors: list[str] = []
                page.on("pageerror", lambda error: errors.append(str(error)))
                page.goto(url)
                yield portal, demo, page, errors
            finally:
                browser.close()


@pytest.mark.timeout(120)
def test_the_live_page_shows_a_running_flow(record_property: Any, capsys: Any) -> None:
    with _live_page(_build) as (portal, demo, page, errors):
        _drive(page, portal, demo, record_property, capsys)
        assert errors == []  # no script error on the page


async def _build() -> DemoFlow:
    return DemoFlow()  # on the portal's loop: its events belong there


def _drive(
    page: Any,
    portal: BlockingPortal,
    demo: DemoFlow,
    record_property: Any,
    capsys: Any,
) -> None:
    # Every step, as a card in its pipeline's column, in flow order.
    page.wait_for_function(
        "n => document.querySelectorAll('[data-step-id]').length === n", arg=len(STEP_IDS)
    )
    shown = page.eval_on_selector_all("[data-step-id]", "els => els.map(e => e.dataset.stepId)")
    assert shown == STEP_IDS
    for step_id in STEP_IDS:
        card = page.locator(f'[data-step-id="{step_id}"]')
        assert card.locator(".step-id").inner_text() == step_id
        assert card.is_visible()
    columns = page.eval_on_selector_all(
        "[data-pipeline]", "els => els.map(e => e.dataset.pipeline)"
    )
    assert columns == ["orders", "clicks"]
    assert page.inner_text("#name") == "shop"
    assert page.get_attribute("#status", "data-status") == "running"
    assert page.is_hidden("#error")

    # The counts move between two reads.
    portal.call(demo.send_orders, [1, 2, 3, 4, 5])
    first = _wait_field(page, "totals", "items_out", ">=", 5)
    assert first == 5
    portal.call(demo.send_orders, list(range(6, 13)))
    second = _wait_field(page, "totals", "items_out", ">", first)
    assert second > first
    assert _wait_field(page, "totals", "items_out", "==", 12) == 12
    assert _wait_field(page, "running_total", "keys", "==", 4) == 4
    assert _wait_field(page, "parse", "items_in", "==", 12) == 12
    # Rates need two polls; the page computes them itself.
    _wait_field(page, "orders", "rate", ">=", 0)
    # On one worker, "busiest worker" would repeat "busy": no such row.
    _wait_field(page, "parse", "busy", ">=", 0)
    assert page.is_hidden('[data-step-id="parse"] [data-field="busy_max"]')

    # Clicks in a window, one of them late; then a jam at "enrich".
    clicks = [demo.click(f"user-{i % 3}", 10 + i) for i in range(9)]
    portal.call(demo.send_clicks, [*clicks, demo.click("user-0", -120)])
    portal.call(demo.until, "clicks_per_minute", "items_in", 10)
    _wait_field(page, "clicks_per_minute", "windows_open", "==", 3)
    _wait_field(page, "clicks_per_minute", "late", "==", 1)
    _wait_field(page, "clicks_per_minute", "watermark_lag", ">=", 0)
    portal.call(demo.jam)
    page.wait_for_selector('[data-step-id="enrich"] [data-field="fill"][data-full="true"]')
    # One more, and the input waits for room: it is held back, and says so.
    portal.call(demo.send_clicks, [demo.click("jammer", 31, jam=True)])
    _wait_field(page, "clicks", "blocked", ">", 50)
    assert page.get_attribute('[data-step-id="clicks"] [data-field="fill"]', "hidden") is not None
    color = page.eval_on_selector(
        '[data-step-id="enrich"] .track > span', "el => getComputedStyle(el).backgroundColor"
    )
    full_color = page.eval_on_selector("#error", "el => getComputedStyle(el).color")
    assert color == full_color  # the theme's red
    screenshot(page, "live-page-running.png", record_property, capsys)

    # A failure of the flow shows in the header.
    portal.call(demo.send_orders, ["poison"])
    page.wait_for_selector("#error:not([hidden])")
    assert "ValueError: poison order: refused" in page.inner_text("#error")
    page.wait_for_selector('#status[data-status="failed"]')
    assert page.get_attribute('[data-step-id="parse"]', "data-failed") == "true"
    assert page.inner_text("#ready") == "no"
    path = screenshot(page, "live-page.png", record_property, capsys)
    assert path.stat().st_size > 10_000
    # An ended flow has no rates any more.
    page.wait_for_selector('[data-step-id="orders"] [data-field="rate"]:not([data-value])')
    page.emulate_media(color_scheme="dark")
    background = page.eval_on_selector("body", "el => getComputedStyle(el).backgroundColor")
    assert background == "rgb(19, 21, 26)"  # the dark theme's
    screenshot(page, "live-page-dark.png", record_property, capsys)


@pytest.mark.timeout(120)
def test_the_live_page_shows_the_one_worker_that_holds_a_step_back(
    record_property: Any, capsys: Any
) -> None:
    # Summed over two workers, one jammed and one idle, the step looked half
    # busy with a half-full queue: nothing said that it held the flow back.
    with _live_page(_build_hot) as (portal, hot, page, errors):
        portal.call(hot.jam)
        fill = '[data-step-id="count"] [data-field="fill"]'
        page.wait_for_selector(fill + '[data-full="true"]')
        label = page.inner_text(fill + " .label")
        assert f"worker {hot.hot_worker} full" in label, label
        width = page.eval_on_selector(fill + " .track > span", "el => el.style.width")
        assert width == "100%"  # the fullest worker's channel, not the sum's
        assert _wait_field(page, "count", "busy_max", ">", 90) <= 100
        # The mean over the two workers is about half of that.
        assert _field(page, "count", "busy") < 60
        workers = page.inner_text('[data-step-id="count"] [data-field="workers"]')
        assert workers == "2 workers"
        screenshot(page, "live-page-hot-worker.png", record_property, capsys)
        assert errors == []


async def _build_hot() -> HotKeyFlow:
    return HotKeyFlow()


@pytest.mark.parametrize(("require", "outcome"), [("", "skip"), ("1", "fail")])
def test_without_a_browser_it_skips_unless_one_is_required(
    monkeypatch: pytest.MonkeyPatch, require: str, outcome: str
) -> None:
    monkeypatch.setattr(browser_helpers, "CHROMIUM", Path("/nonexistent/chromium"))
    monkeypatch.setenv("AIOWAX_REQUIRE_BROWSER", require)
    expected = pytest.skip.Exception if outcome == "skip" else pytest.fail.Exception
    with pytest.raises(expected, match="apt-get install chromium"):
        sync_api()
