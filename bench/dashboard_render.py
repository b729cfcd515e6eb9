"""Dashboard rendering benchmark: how long the page takes to draw the topology tree and to keep
its chart history for networks of hundreds to thousands of nodes, in the real headless Chromium.

What it measures, for each tree size N (ministry → provinces → cities, synthetic entries shaped
like `/v1/network/tree`):
- `renderTree` (tree order, formatting, one row per node, everything expanded) — median of R runs,
  as a ratio to a baseline measured in the same page: the same N rows with the same six text
  cells built with bare DOM calls (no ordering, no formatting), layout forced after each;
- the default view (above 200 nodes every node with children starts collapsed): rows drawn and
  median time;
- one poll's worth of chart bookkeeping (`RollingHistory.add` for every node's lag), median;
- the size of the tree document as JSON (what every poll transfers).

How: start a single ministry node on 127.0.0.1 (the page's modules are imported from it, as the
page does, under its Content-Security-Policy), open `/` in Chromium driven by Playwright (the
system browser, `/usr/bin/chromium`), and time inside the page with `performance.now()`.

What it does not do: it does not measure the node's side of `/v1/network/tree` (heartbeats are
not running for these synthetic nodes), network transfer, or painting (layout is forced by
reading `offsetHeight` after each render, paint is not).

    python bench/dashboard_render.py [--sizes 100,500,2000] [--runs 15] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.async_api import async_playwright

from tests.support.network import make_network

MEASURE_JS = """
async ([n, runs]) => {
  const tree = await import('/static/tree.js');
  const { RollingHistory } = await import('/static/history.js');
  const now = Date.now();
  const nodes = [{ node_id: '100000', parent: null, level: 'ministry', name: 'Ministry',
                   health: 'up', last_seen_ms: now, lag_s: 0, backlog: 0, release: 'std-7' }];
  const provinces = Math.max(1, Math.round(Math.sqrt(n) / 2));
  for (let p = 0; nodes.length < n && p < provinces; p++) {
    nodes.push({ node_id: String(200000 + p * 100), parent: '100000', level: 'province',
                 name: 'Province ' + p, health: 'up', last_seen_ms: now - 900, lag_s: 0.4,
                 backlog: 0, release: 'std-7' });
  }
  for (let i = 0; nodes.length < n; i++) {
    const p = i % provinces;
    nodes.push({ node_id: String(200001 + p * 100 + Math.floor(i / provinces)),
                 parent: String(200000 + p * 100), level: 'city', name: 'City ' + i,
                 health: i % 17 === 0 ? 'down' : 'up', last_seen_ms: now - (i % 30) * 100,
                 lag_s: (i % 13) * 0.7, backlog: i % 11,
                 release: i % 29 === 0 ? 'std-6' : 'std-7' });
  }
  const doc = { root: '100000', generated_ms: now, heartbeat_interval_s: 10, nodes };
  // A table like the page's own (same classes, in the same panel, so the page's CSS applies).
  const table = document.createElement('table');
  table.className = document.getElementById('tree').className;
  table.append(document.querySelector('#tree thead').cloneNode(true));
  const tbody = table.createTBody();
  document.getElementById('tree-panel').append(table);
  const median = (xs) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const timeIt = (fn) => {
    const out = [];
    for (let r = 0; r < runs; r++) {
      const t0 = performance.now();
      fn();
      void tbody.offsetHeight;  // force layout
      out.push(performance.now() - t0);
    }
    return median(out);
  };
  const baseline = timeIt(() => {
    const rows = nodes.map((x) => {
      const tr = document.createElement('tr');
      for (const v of [x.name, x.health, x.lag_s, x.backlog, x.release, x.last_seen_ms]) {
        const td = document.createElement('td');
        td.textContent = String(v);
        tr.append(td);
      }
      return tr;
    });
    tbody.replaceChildren(...rows);
  });
  const render = timeIt(() => tree.renderTree(tbody, doc, '', () => {}));
  const folded = tree.defaultCollapsed(nodes, '100000');
  let rowsFolded = 0;
  const renderFolded = timeIt(() => {
    rowsFolded = tree.renderTree(tbody, doc, '', () => {}, { collapsed: folded });
  });
  const h = new RollingHistory({ windowMs: 15 * 60 * 1000, maxPoints: 305 });
  for (let poll = 0; poll < 305; poll++) {
    h.begin(poll * 3000);
    for (const x of nodes) h.add('lag:' + x.node_id, poll * 3000, x.lag_s);
  }
  let t = 305 * 3000;
  const history = timeIt(() => {
    h.begin((t += 3000));
    for (const x of nodes) h.add('lag:' + x.node_id, t, x.lag_s);
  });
  table.remove();
  return { nodes: n, render_ms: render, baseline_ms: baseline, ratio: render / baseline,
           default_view_rows: rowsFolded, default_view_ms: renderFolded,
           history_add_ms: history, history_points: h.size(),
           tree_json_bytes: JSON.stringify(doc).length };
}
"""


async def run(sizes: list[int], runs: int) -> list[dict[str, Any]]:
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with tempfile.TemporaryDirectory(prefix="lsnet-dash-bench-") as tmp:
        net = make_network(Path(tmp), cities_per_province=1)
        await net.init_all()
        node = await net.start(net.ministry_id)
        try:
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(
                    executable_path=chromium, headless=True, args=["--no-sandbox"]
                )
                try:
                    page = await browser.new_page()
                    await page.goto(node.config.node.url + "/?refresh=60")
                    results = []
                    for n in sizes:
                        results.append(await page.evaluate(MEASURE_JS, [n, runs]))
                    return results
                finally:
                    await browser.close()
        finally:
            await net.stop_all()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,500,2000", help="tree sizes, comma-separated")
    ap.add_argument("--runs", type=int, default=15, help="timed runs per size (median reported)")
    ap.add_argument("--json", action="store_true", help="one JSON array on stdout")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results = asyncio.run(run(sizes, args.runs))
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'nodes':>6} {'render ms':>10} {'baseline ms':>12} {'ratio':>6} {'default rows':>12} "
          f"{'default ms':>11} {'history ms':>11} {'points':>8} {'tree KiB':>9}")  # fmt: skip
    for r in results:
        print(
            f"{r['nodes']:>6} {r['render_ms']:>10.1f} {r['baseline_ms']:>12.1f} "
            f"{r['ratio']:>6.2f} {r['default_view_rows']:>12} {r['default_view_ms']:>11.1f} "
            f"{r['history_add_ms']:>11.2f} {r['history_points']:>8} "
            f"{r['tree_json_bytes'] / 1024:>9.1f}"
        )


if __name__ == "__main__":
    main()
