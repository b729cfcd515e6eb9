"""The page's pure JavaScript (rolling history, rates, tree order, filters, chart scale) run in
the real headless Chromium, imported from a running node as the page imports them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.dashboard.test_dashboard_browser import CHROMIUM, async_playwright, pytestmark
from tests.support.network import make_network

__all__ = ["pytestmark"]  # the same skips as the browser test: no Chromium or no Playwright


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Any]:
    net = make_network(tmp_path, cities_per_province=1)
    await net.init_all()
    node = await net.start(net.ministry_id)
    try:
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(
                executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                p = await browser.new_page()
                errors: list[str] = []
                p.on("pageerror", lambda exc: errors.append(str(exc)))
                await p.goto(node.config.node.url + "/")
                yield p
                assert errors == []
            finally:
                await browser.close()
    finally:
        await net.stop_all()


async def test_rolling_history_is_bounded(page: Any) -> None:
    out = await page.evaluate(
        """async () => {
          const { RollingHistory } = await import('/static/history.js');
          const h = new RollingHistory({ windowMs: 10_000, maxPoints: 5, maxSeries: 3 });
          for (let t = 0; t < 100; t++) h.add('a', t * 1000, t);
          const a = h.get('a').map(([t]) => t);
          const w = new RollingHistory({ windowMs: 10_000, maxPoints: 100, maxSeries: 3 });
          for (let t = 0; t < 100; t++) w.add('a', t * 1000, t);
          const inWindow = w.get('a').length;
          for (const k of ['b', 'c', 'd']) w.add(k, 100_000, 1);
          w.add('x', 100_000, NaN); w.add('y', 100_000, null);
          return { a, inWindow, keys: w.keys(), size: w.size(), latest: w.latest('a') };
        }"""
    )
    assert out["a"] == [95000, 96000, 97000, 98000, 99000]  # the newest maxPoints
    assert out["inWindow"] == 11  # 89 s .. 99 s: the window is 10 s
    assert out["keys"] == ["b", "c", "d"]  # 'a' was least recently updated: dropped
    assert out["size"] == 3 and out["latest"] is None


async def test_rates_from_counters(page: Any) -> None:
    out = await page.evaluate(
        """async () => {
          const { RateTracker } = await import('/static/history.js');
          const r = new RateTracker();
          return [r.rates(0, { c: 10 }), r.rates(2000, { c: 30 }), r.rates(4000, { c: 5, n: 40 }),
                  r.rates(5000, { c: 15, n: 40 }), r.rates(5000, { c: 99 })];
        }"""
    )
    assert out == [
        {"c": None},  # first poll: a baseline only
        {"c": 10},
        {"c": None, "n": 20},  # c went down: restarts; n is new: it started from 0 at 2 s
        {"c": 10, "n": 0},
        {"c": None},  # no time passed
    ]


async def test_tree_order_filters_and_scale(page: Any) -> None:
    out = await page.evaluate(
        """async () => {
          const t = await import('/static/tree.js');
          const c = await import('/static/charts.js');
          const n = (id, parent, extra = {}) =>
            ({ node_id: id, parent, name: 'N' + id, health: 'up', release: 'r2', lag_s: 0,
               ...extra });
          const nodes = [
            n('320100', '320000'), n('330000', '100000', { health: 'down' }),
            n('100000', null), n('320000', '100000'), n('320200', '320000', { release: 'r1' }),
            n('999999', 'gone', { health: 'unknown' }), n('320300', '320000', { lag_s: 75 }),
          ];
          const order = t.treeOrder(nodes, '100000').map(([x, d]) => x.node_id + ':' + d);
          const attention = nodes.filter((x) => t.needsAttention(x, 'r2')).map((x) => x.node_id);
          const folded = t.treeOrder(nodes, '100000', new Set(['320000']));
          const big = Array.from({ length: 250 }, (_, i) =>
            n(String(400000 + i),
              i === 0 ? null : i < 10 ? '400000' : String(400000 + (i % 9) + 1)));
          return {
            order, attention: attention.sort(),
            folded: folded.map(([x, d, below]) => [x.node_id, d, below]),
            small: [...t.defaultCollapsed(nodes, '100000')],
            big: [...t.defaultCollapsed(big, '400000')].length,
            summary: t.summarise(nodes),
            byName: nodes.filter((x) => t.matches(x, 'n3202')).map((x) => x.node_id),
            scale: [0, 0.3, 1, 7, 11, 4000].map(c.niceMax),
            held: [0, 2].map(
              (h) => t.needsAttention(n('320400', '320000', { held_records: h }), 'r2')),
          };
        }"""
    )
    assert out["held"] == [False, True]  # records held aside need an operator's attention
    assert out["order"] == [
        "100000:0",
        "320000:1",
        "320100:2",
        "320200:2",
        "320300:2",
        "330000:1",
        "999999:0",  # an orphan (its parent is not in the tree) is still shown
    ]
    up3 = {"up": 3, "down": 0, "unknown": 0, "total": 3}
    none = {"up": 0, "down": 0, "unknown": 0, "total": 0}
    assert out["folded"] == [
        ["100000", 0, {"up": 4, "down": 1, "unknown": 0, "total": 5}],
        ["320000", 1, up3],  # collapsed: its cities are counted, not listed
        ["330000", 1, none],
        ["999999", 0, none],
    ]
    assert out["small"] == []  # a small tree starts expanded
    assert out["big"] == 9  # a large one starts with every node that has children collapsed
    assert out["attention"] == ["320200", "320300", "330000", "999999"]
    assert out["summary"] == "7 nodes · 5 up · 1 down · 1 unknown"
    assert out["byName"] == ["320200"]
    assert out["scale"] == [1, 0.5, 1, 10, 20, 5000]


async def test_statistics_cells_suppressed_estimated_and_region_nesting(page: Any) -> None:
    out = await page.evaluate(
        """async () => {
          const s = await import('/static/statcharts.js');
          const cell = (region, value, extra = {}) => ({ region, value,
            value_text: value === null ? null : String(value), suppressed: false,
            estimated: false, ...extra });
          const hidden = cell('330200', null, { suppressed: true });
          const complement = cell('330400', null, { suppressed: 'secondary' });
          const cells = [cell('330100', 1200.5), hidden, cell('330300', 7, { estimated: true }),
                         complement];
          const box = document.createElement('div');
          s.barChart(box, cells, { labels: { region: { '330100': 'Hangzhou' } }, unit: 'yuan' });
          const rows = [...box.querySelectorAll('g.bar-row')].map((g) => [g.dataset.region,
            g.querySelector('.bar-value').textContent, g.querySelectorAll('rect.bar').length,
            g.dataset.suppression]);
          const tree = document.createElement('div');
          s.regionTree(tree, [{ cells: [cell('330000', 5000), cell('110000', 9)], labels: {} },
                              { cells: [cell('330106', 3), cell('320100', 4), cell('110000', 9)],
                                labels: {} }]);
          const nested = [...tree.querySelectorAll('li.region-node')].map((li) =>
            [li.dataset.region, li.parentElement.closest('li') ?
              li.parentElement.closest('li').dataset.region : null]);
          const line = document.createElement('div');
          const at = (period, v) => ({ period, ...cell('', v) });
          s.periodLine(line, [at('2024-01', 2), at('2024-03', 4)],
                       { periods: ['2024-01', '2024-02', '2024-03'] });
          return { rows, nested, parents: ['330106', '330100', '330000', 'x'].map(s.parentRegion),
                   points: line.querySelectorAll('circle.point').length,
                   lines: line.querySelectorAll('polyline').length };
        }"""
    )
    assert out["rows"] == [
        ["330100", "1,200.5 yuan", 1, ""],  # largest first, exact text
        ["330300", "≈ 7 yuan", 1, ""],  # an estimate is marked
        ["330200", "suppressed (small cell)", 0, "true"],  # no bar: never drawn as zero
        # secondary suppression is told apart from a small cell
        ["330400", "suppressed (complement)", 0, "secondary"],
    ]
    # a county nests under its province when its prefecture is not in the answer; a region
    # whose province is not in the answer stays at the top
    # a municipality is its own prefecture-level unit: listed once
    assert out["nested"] == [
        ["110000", None],
        ["330000", None],
        ["330106", "330000"],
        ["320100", None],
    ]
    assert out["parents"] == ["330100", "330000", None, None]
    assert out["points"] == 2 and out["lines"] == 0  # a gap (2024-02) breaks the line
