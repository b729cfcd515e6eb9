"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by Playwright with the
system browser — Playwright downloads nothing), against a running city → province → ministry
network over real HTTP on 127.0.0.1 with fast heartbeats.

The page loads from the ministry, its tree shows every node up, a stopped city turns red within
the heartbeat timeout, and a screenshot is saved (under the test's tmp dir; also copied to
`$LSNET_DASHBOARD_SCREENSHOT` when that is set). A city's own dashboard is read-only until an
operator token is pasted; then its link actions work. Skipped, with the reason shown, when
Chromium or Playwright is missing.

Playwright's sync API cannot run inside the test's event loop, so the async API is used in the
same loop as the network. Every wait is Playwright's polling `expect` with a deadline, never a
sleep.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.datagen import generate_records
from security.tokens import Scope, create_token
from tests.network_mgmt.support import INTERVAL_S, MISSED, fast_network
from tests.support.network import TestNet

CHROMIUM = os.environ.get("LSNET_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

try:
    from playwright.async_api import Browser, Page, async_playwright, expect
    from playwright.async_api import TimeoutError as PlaywrightTimeout
except ImportError:  # pragma: no cover - the test extra installs it
    async_playwright = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.skipif(async_playwright is None, reason="playwright is not installed (test extra)"),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(),
        reason=f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)",
    ),
]

REFRESH_S = 1  # the page polls every second (?refresh=1)
# The ministry learns a city is down when the province has missed MISSED heartbeats and sent its
# own next heartbeat; the page shows it at its next poll. Generous margin for a loaded CI box.
DOWN_WITHIN_MS = int((INTERVAL_S * (MISSED + 2) + 2 * REFRESH_S + 10) * 1000)

RED = "rgb(198, 40, 40)"
GREEN = "rgb(46, 125, 50)"


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[TestNet]:
    testnet = fast_network(tmp_path, provinces=2, cities=2)
    await testnet.init_all()
    await testnet.start_all()
    try:
        yield testnet
    finally:
        await testnet.stop_all()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            yield b
        finally:
            await b.close()


async def _open(browser: Browser, url: str, errors: list[str]) -> Page:
    page = await browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None
        ),
    )
    await page.goto(url + f"/?refresh={REFRESH_S}")
    try:  # the page's first poll completes (it counts polls in <body data-polls>)
        await page.wait_for_function("() => Number(document.body.dataset.polls || 0) >= 1")
    except PlaywrightTimeout:
        raise AssertionError(f"the page never completed a poll; page errors: {errors}") from None
    return page


async def test_ministry_page_shows_the_tree_and_a_stopped_city_turns_red(
    net: TestNet, browser: Browser, tmp_path: Path
) -> None:
    ministry = net.nodes[net.ministry_id]
    everyone = sorted(net.configs)
    errors: list[str] = []
    page = await _open(browser, ministry.config.node.url, errors)

    rows = page.locator("#tree tbody tr.node-row")
    await expect(rows).to_have_count(len(everyone), timeout=20_000)
    for node_id in everyone:
        row = page.locator(f'#tree tr[data-node-id="{node_id}"]')
        await expect(row).to_have_attribute("data-health", "up", timeout=20_000)
    await expect(page.locator("#freshness")).to_have_attribute("data-state", "fresh")
    first = await rows.first.get_attribute("data-node-id")
    assert first == net.ministry_id  # the tree is drawn from the root down
    badge = page.locator(f'#tree tr[data-node-id="{net.ministry_id}"] .badge')  # always up
    # The page rebuilds the tree's rows at every poll: expect() finds the badge again on each try
    # (an element found once can be replaced before its style is read; it reads "" then).
    await expect(badge).to_have_css("background-color", GREEN)

    # Records flowing from a city show in the throughput chart (rates from /v1/status).
    busy = net.city_ids()[-1]
    for round_ in range(3):
        await net.ingest(busy, generate_records(busy, 100, seed=round_))
        await net.wait_converged()
    await expect(page.locator("#throughput-chart .legend")).to_contain_text(busy, timeout=20_000)
    await expect(page.locator("#throughput-chart polyline")).not_to_have_count(0)

    city = net.city_ids()[0]
    await net.stop(city)
    city_row = page.locator(f'#tree tr[data-node-id="{city}"]')
    await expect(city_row).to_have_attribute("data-health", "down", timeout=DOWN_WITHIN_MS)
    await expect(city_row.locator(".badge")).to_have_css("background-color", RED)
    for other in everyone:
        if other != city:  # the others stay (or, after a hiccup of a loaded machine, are again) up
            row = page.locator(f'#tree tr[data-node-id="{other}"]')
            await expect(row).to_have_attribute("data-health", "up", timeout=DOWN_WITHIN_MS)
    await expect(page.locator("#summary")).to_contain_text("1 down")
    down_alert = page.locator(f'#alerts li[data-alert="node_down"][data-node="{city}"]')
    await expect(down_alert).to_have_count(1, timeout=10_000)
    await expect(down_alert.locator(".badge")).to_have_text("critical")

    # Collapsing the city's province hides its cities and flags the trouble below it.
    province_id = net.configs[city].parent.id  # type: ignore[union-attr]
    province_row = page.locator(f'#tree tr[data-node-id="{province_id}"]')
    await province_row.locator("button.toggle").click()
    await expect(rows).to_have_count(len(everyone) - 2)
    await expect(province_row).to_have_class(re.compile(r"\btrouble-below\b"))
    await expect(province_row.locator(".below")).to_have_text("2 below · 1 down")
    await province_row.locator("button.toggle").click()
    await expect(rows).to_have_count(len(everyone))

    # Drill-down: the stopped city's last known state, its link and errors.
    await city_row.click()
    await expect(page.locator("#detail-title")).to_have_text(city)
    await expect(page.locator("#detail")).to_contain_text("Links")
    await expect(page.locator("#detail table.facts")).to_contain_text("down")
    # Read-only without a token: no action buttons anywhere.
    assert await page.locator("button.action").count() == 0
    # Charts drew from the rolling history; the security feed is for operators only.
    await expect(page.locator("#lag-chart svg.line-chart")).to_have_count(1)
    await expect(page.locator("#events-note")).to_contain_text("needs an operator token")

    shot = tmp_path / "dashboard.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    target = os.environ.get("LSNET_DASHBOARD_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
    print(f"dashboard screenshot: {shot}")

    # "Only nodes needing attention" narrows hundreds of rows to the ones that matter.
    await page.check("#problems-only")
    await expect(rows).to_have_count(1, timeout=DOWN_WITHIN_MS)
    assert await rows.first.get_attribute("data-node-id") == city
    await page.uncheck("#problems-only")
    await page.fill("#tree-filter", net.province_ids()[0])
    await expect(rows).to_have_count(1)
    await page.fill("#tree-filter", "")
    await expect(rows).to_have_count(len(everyone))
    assert errors == []

    # A province's own page shows its subtree only.
    province = net.nodes[net.province_ids()[0]]
    subtree = {province.config.node_id, *(c.id for c in province.config.children)}
    ppage = await _open(browser, province.config.node.url, errors)
    prows = ppage.locator("#tree tbody tr.node-row")
    await expect(prows).to_have_count(len(subtree), timeout=20_000)
    assert {await r.get_attribute("data-node-id") for r in await prows.all()} == subtree

    # When the node serving the page goes away, the page says its data is stale.
    await net.stop(net.ministry_id)
    await expect(page.locator("#freshness")).to_have_attribute(
        "data-state", "stale", timeout=(3 * REFRESH_S + 15) * 1000
    )
    await expect(page.locator("#freshness")).to_contain_text("STALE")
    assert [e for e in errors if "Failed to load resource" not in e] == []


async def test_city_page_is_read_only_until_an_operator_token_is_pasted(
    net: TestNet, browser: Browser
) -> None:
    city = net.nodes[net.city_ids()[0]]
    token, _ = await create_token(
        city.db,
        name="dash-test",
        scope=Scope.OPERATOR,
        created_by="test",
        now_ms=city.clock.time_ms(),
    )
    errors: list[str] = []
    page = await _open(browser, city.config.node.url, errors)
    own = page.locator(f'#tree tr[data-node-id="{city.config.node_id}"]')
    await expect(own).to_have_count(1, timeout=20_000)
    await own.click()
    await expect(page.locator("#detail")).to_contain_text("Read-only")
    assert await page.locator("button.action").count() == 0

    await page.fill("#token-input", token)
    await page.click("#token-form button[type=submit]")
    await expect(page.locator("#token-state")).to_be_visible()
    assert await page.evaluate("() => sessionStorage.getItem('lsnet.operatorToken')") == token
    retry = page.locator('#detail button.action[data-action="retry"]')
    await expect(retry).to_have_count(1, timeout=10_000)

    # Pause asks for a reason (it goes into the audit log), then the link shows paused.
    answers: list[Any] = []

    async def on_dialog(dialog: Any) -> None:
        answers.append(dialog.message)
        await dialog.accept("dashboard test")

    page.on("dialog", on_dialog)
    await page.locator('#detail button.action[data-action="pause"]').click()
    await expect(page.locator("#action-result")).to_have_text("pause: done", timeout=10_000)
    assert answers and "Reason" in answers[0]
    assert city.upstream is not None and city.upstream.paused
    await page.locator('#detail button.action[data-action="resume"]').click()
    await expect(page.locator("#action-result")).to_have_text("resume: done", timeout=10_000)
    assert not city.upstream.paused

    # Forgetting the token hides the actions again; a bad token is refused by the API.
    await page.click("#token-clear")
    await expect(page.locator("#token-form")).to_be_visible()
    await expect(retry).to_have_count(0, timeout=10_000)
    await page.fill("#token-input", "lsn_not-a-real-token")
    await page.click("#token-form button[type=submit]")
    await expect(retry).to_have_count(1, timeout=10_000)
    await retry.click()
    await expect(page.locator("#action-result")).to_contain_text("refused", timeout=10_000)
    await expect(page.locator("#action-result")).to_contain_text("check the operator token")
    # The browser logs the refused request itself; nothing else went wrong on the page.
    assert [e for e in errors if "status of 401" not in e] == []
