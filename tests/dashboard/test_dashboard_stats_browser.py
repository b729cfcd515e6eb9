"""The dashboard's Statistics panel in a real headless Chromium against a running network
(ministry, two provinces, two cities each) over real HTTP: generated contribution records are
ingested at the cities (one city with too few for its cell to be shown) and replicate up; the
ministry's page draws bars by region, a line over periods and the region tree, with the same
values the statistics API answers, the small cell shown as suppressed (and its complement); the
federated path says it is complete, and names the missing node once a city is stopped. Without
an operator token the panel asks the node for nothing. Every wait is Playwright's polling
`expect`."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.datagen import generate_records
from security.tokens import Scope, create_token
from tests.dashboard.test_dashboard_browser import _open, browser, pytestmark
from tests.network_mgmt.support import fast_network, get_json
from tests.support.network import TestNet

try:
    from playwright.async_api import expect
except ImportError:  # pragma: no cover - skipped by pytestmark then
    expect = None  # type: ignore[assignment]

__all__ = ["browser", "pytestmark"]  # the shared browser fixture and skips

INDICATOR = "contributions_collected"
PERIOD = "2024-01..2024-12"
WAIT_MS = 20_000


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[TestNet]:
    testnet = fast_network(tmp_path, provinces=2, cities=2)
    await testnet.init_all()
    await testnet.start_all()
    try:
        yield testnet
    finally:
        await testnet.stop_all()


async def _api(node: Any, token: str, by: str, level: str = "prefecture") -> dict[str, Any]:
    path = f"/v1/stats/run/{INDICATOR}?by={by}&level={level}&period={PERIOD}"
    status, doc = await get_json(node, path, token)
    assert status == 200, doc
    return doc  # type: ignore[no-any-return]


async def test_statistics_panel_draws_what_the_api_answers(
    net: TestNet, browser: Any, tmp_path: Path
) -> None:
    cities = net.city_ids()
    for i, city in enumerate(cities[:-1]):
        await net.ingest(city, generate_records(city, 150 + 50 * i, seed=i))
    # The last city has only 3 contributions: below the minimum cell size (5), suppressed.
    small = cities[-1]
    objs = generate_records(small, 150, seed=9)
    paid = [o for o in objs if o["type"] == "contribution" and o["paid_date"] < "2025"][:3]
    assert len(paid) == 3
    await net.ingest(small, [o for o in objs if o["type"] != "contribution"] + paid)
    await net.wait_converged()
    ministry = net.nodes[net.ministry_id]
    token, _ = await create_token(
        ministry.db,
        name="stats-dash",
        scope=Scope.OPERATOR,
        created_by="test",
        now_ms=ministry.clock.time_ms(),
    )
    regions = await _api(ministry, token, "region")
    periods = await _api(ministry, token, "period")
    expected = {c["region"]: c["value_text"] for c in regions["cells"]}
    assert set(expected) == set(cities)
    hidden = {c["region"]: c["suppressed"] for c in regions["cells"] if c["suppressed"]}
    # the small city, and its complement (the other city of its province: otherwise the
    # province's total minus that city would give the small city away)
    assert hidden[small] == "primary"
    assert sorted(hidden.values()) == ["primary", "secondary"]
    (complement,) = (c for c, s in hidden.items() if s == "secondary")
    assert all(v for c, v in expected.items() if c not in hidden)
    assert len(periods["cells"]) > 1

    errors: list[str] = []
    asked: list[str] = []
    page = await _open(browser, ministry.config.node.url, errors)
    page.on("request", lambda r: asked.append(r.url) if "/v1/stats/" in r.url else None)
    # Without a token: the panel says what it needs and asks for nothing.
    await expect(page.locator("#stats-panel")).to_be_visible()
    await expect(page.locator("#stats-note")).to_have_text("(needs an operator token)")
    await expect(page.locator("#stats-body")).to_be_hidden()
    await page.wait_for_function("() => Number(document.body.dataset.polls || 0) >= 2")
    assert asked == []

    await page.fill("#token-input", token)
    await page.click("#token-form button[type=submit]")
    await expect(page.locator(f'#stats-indicator option[value="{INDICATOR}"]')).to_have_count(1)
    await page.fill("#stats-from", "2024-01")
    await page.fill("#stats-to", "2024-12")
    await page.select_option("#stats-indicator", INDICATOR)
    await page.click("#stats-form button[type=submit]")

    # Bars: one per region (city), each with the API's exact value and the region's name.
    rows = page.locator("#stats-bars g.bar-row")
    await expect(rows).to_have_count(len(cities), timeout=WAIT_MS)
    names = regions["labels"].get("region", {})
    for city, value in expected.items():
        row = page.locator(f'#stats-bars g.bar-row[data-region="{city}"]')
        await expect(row).to_have_attribute("data-value", value or "")
        await expect(row).to_have_attribute("data-suppressed", str(city in hidden).lower())
        await expect(row).to_have_attribute("data-suppression", hidden.get(city, ""))
        if city == small:  # shown as suppressed, never as a zero-length bar
            await expect(row.locator(".bar-value")).to_have_text("suppressed (small cell)")
            await expect(row.locator("rect.bar")).to_have_count(0)
        if city == complement:  # told apart from a small cell
            await expect(row.locator(".bar-value")).to_have_text("suppressed (complement)")
            await expect(row.locator("rect.bar")).to_have_count(0)
        if city in names:
            await expect(row.locator("text").first).to_contain_text(names[city])
    # The line: one point per period the API answered, with its value.
    points = page.locator("#stats-line circle.point")
    await expect(points).to_have_count(len(periods["cells"]))
    for cell in periods["cells"]:
        point = page.locator(f'#stats-line circle.point[data-period="{cell["period"]}"]')
        await expect(point).to_have_attribute("data-value", cell["value_text"] or "")
    # The region tree: provinces at the top, each city nested under its own province.
    top = page.locator('#stats-tree li.region-node[data-depth="0"]')
    await expect(top).to_have_count(len(net.province_ids()))
    for city in cities:
        province = city[:2] + "0000"
        nested = page.locator(
            f'#stats-tree li[data-region="{province}"] li.region-node[data-region="{city}"]'
        )
        await expect(nested).to_have_attribute("data-value", expected[city] or "")
    provinces = await _api(ministry, token, "region", "province")
    for cell in provinces["cells"]:
        item = page.locator(f'#stats-tree li[data-region="{cell["region"]}"]')
        await expect(item).to_have_attribute("data-value", cell["value_text"] or "")
    await expect(page.locator("#stats-status")).to_have_attribute("data-complete", "true")
    # the status line is the legend of hidden cells, small ones and complements alike
    await expect(page.locator("#stats-status")).to_contain_text("suppressed (complement)")

    # Federated: every node answers its own part; the sums are the same and complete.
    await page.check("#stats-federated")
    status = page.locator("#stats-status")
    await expect(status).to_contain_text(
        f"complete: answered by all {len(net.nodes)} nodes", timeout=WAIT_MS
    )
    await expect(status).to_have_attribute("data-complete", "true")
    for city, value in expected.items():
        row = page.locator(f'#stats-bars g.bar-row[data-region="{city}"]')
        await expect(row).to_have_attribute("data-value", value or "")
    assert any("federated=1" in url for url in asked)
    await page.locator("#stats-panel").screenshot(path=str(tmp_path / "stats-panel.png"))
    shot = tmp_path / "dashboard-stats.png"
    await page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    target = os.environ.get("LSNET_DASHBOARD_STATS_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)
    print(f"statistics screenshot: {shot}")

    # A stopped city: the federated answer is labelled incomplete and names it.
    gone = cities[0]
    await net.stop(gone)
    await page.click("#stats-form button[type=submit]")
    await expect(status).to_have_attribute("data-complete", "false", timeout=WAIT_MS)
    await expect(status).to_contain_text("INCOMPLETE")
    await expect(status).to_contain_text(f"missing: {gone}")
    assert errors == []
