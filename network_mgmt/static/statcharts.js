// Hand-drawn SVG charts of statistics answers (no chart library): horizontal bars by region, a
// line over periods, and a map-like region tree (GB/T 2260: province → prefecture → county,
// nested by code). They only draw the cells they are given; fetching, the controls and the
// completeness note are stats.js's job. Suppressed cells are drawn as such (never as zero) and
// estimates carry "≈". Every element that carries a value has data-* attributes for tests.

import { niceMax } from "./charts.js";
import { el } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const NUMBER = new Intl.NumberFormat("en", { maximumFractionDigits: 2 });
export const SUPPRESSED = "suppressed (small cell)";
export const COMPLEMENT = "suppressed (complement)"; // hidden so a small cell cannot be subtracted out
export const WITHHELD = "withheld by its node";

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// The text of one cell's value: why it is hidden (`suppressed` is false or "primary" = a small
// cell, "secondary" = its complement, "withheld" = blanked by the node holding the records),
// "–" (undefined, e.g. a ratio over 0), or the exact number (from value_text) with "≈" in front
// of an estimate.
export function cellText(cell, unit = "") {
  if (cell.suppressed === "secondary") return COMPLEMENT;
  if (cell.suppressed === "withheld") return WITHHELD;
  if (cell.suppressed) return SUPPRESSED;
  if (cell.value_text === null || cell.value_text === undefined) return "–";
  const n = Number(cell.value_text);
  const shown = Number.isFinite(n) ? NUMBER.format(n) : cell.value_text;
  return (cell.estimated ? "≈ " : "") + shown + (unit ? " " + unit : "");
}

function plotted(cell) {
  return cell.suppressed || cell.value === null ? 0 : Math.max(0, Number(cell.value));
}

export function regionName(labels, code) {
  const names = (labels && labels.region) || {};
  return names[code] ? `${names[code]} (${code})` : code;
}

// cells: [{region, value, value_text, suppressed, estimated}]; one row (<g class="bar-row">) per
// cell, largest first.
export function barChart(container, cells, { labels, unit = "" } = {}) {
  const rows = [...cells].sort((a, b) => plotted(b) - plotted(a) || a.region.localeCompare(b.region));
  const W = 640;
  const ROW = 24;
  const LEFT = 190;
  const RIGHT = 150;
  const H = Math.max(1, rows.length) * ROW + 8;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "stat-chart bar-chart", role: "img" });
  const max = niceMax(Math.max(0, ...rows.map(plotted)));
  const span = W - LEFT - RIGHT;
  rows.forEach((cell, i) => {
    const y = 4 + i * ROW;
    const text = cellText(cell, unit);
    const g = svg("g", {
      class: "bar-row" + (cell.suppressed ? " suppressed" : "") + (cell.estimated ? " estimated" : ""),
      "data-region": cell.region,
      "data-value": cell.value_text ?? "",
      "data-suppressed": String(Boolean(cell.suppressed)),
      "data-suppression": cell.suppressed ? String(cell.suppressed) : "",
    });
    g.append(svg("text", { x: LEFT - 8, y: y + 15, class: "axis-label", "text-anchor": "end" }, regionName(labels, cell.region)));
    if (cell.suppressed) {
      g.append(svg("rect", { x: LEFT, y: y + 3, width: span, height: ROW - 8, class: "bar-suppressed" }));
    } else {
      const w = (plotted(cell) / max) * span;
      g.append(svg("rect", { x: LEFT, y: y + 3, width: w.toFixed(1), height: ROW - 8, class: "bar" }));
    }
    g.append(svg("text", { x: W - RIGHT + 8, y: y + 15, class: "bar-value" }, text));
    g.append(svg("title", {}, `${regionName(labels, cell.region)}: ${text}`));
    root.append(g);
  });
  if (rows.length === 0) root.append(svg("text", { x: W / 2, y: 16, class: "axis-label", "text-anchor": "middle" }, "no data"));
  container.replaceChildren(root);
  return root;
}

// cells: [{period, ...}]; periods: every period asked for (gaps drawn as gaps, not zero).
export function periodLine(container, cells, { periods, unit = "" } = {}) {
  const W = 640;
  const H = 200;
  const PAD = { left: 56, right: 12, top: 12, bottom: 26 };
  const byPeriod = new Map(cells.map((c) => [c.period, c]));
  const keys = periods && periods.length ? periods : [...byPeriod.keys()].sort();
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "stat-chart line-chart", role: "img" });
  const max = niceMax(Math.max(0, ...cells.map(plotted)));
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (keys.length <= 1 ? plotW / 2 : (i / (keys.length - 1)) * plotW);
  const y = (v) => PAD.top + plotH - (v / max) * plotH;
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid-line" }));
    root.append(svg("text", { x: PAD.left - 6, y: y(v) + 4, class: "axis-label", "text-anchor": "end" }, NUMBER.format(v)));
  }
  const step = Math.max(1, Math.ceil(keys.length / 12));
  keys.forEach((k, i) => {
    if (i % step === 0) root.append(svg("text", { x: x(i), y: H - 8, class: "axis-label", "text-anchor": "middle" }, k));
  });
  let run = [];
  const flush = () => {
    if (run.length > 1) root.append(svg("polyline", { points: run.join(" "), class: "stat-line", fill: "none" }));
    run = [];
  };
  keys.forEach((k, i) => {
    const cell = byPeriod.get(k);
    if (!cell || cell.suppressed || cell.value === null) return flush();
    run.push(`${x(i).toFixed(1)},${y(plotted(cell)).toFixed(1)}`);
  });
  flush();
  keys.forEach((k, i) => {
    const cell = byPeriod.get(k);
    if (!cell) return;
    const text = cellText(cell, unit);
    const v = cell.suppressed || cell.value === null ? 0 : plotted(cell);
    const dot = svg("circle", {
      cx: x(i).toFixed(1),
      cy: y(v).toFixed(1),
      r: 4,
      class: "point" + (cell.suppressed ? " suppressed" : "") + (cell.estimated ? " estimated" : ""),
      "data-period": k,
      "data-value": cell.value_text ?? "",
    });
    dot.append(svg("title", {}, `${k}: ${text}`));
    root.append(dot);
  });
  if (cells.length === 0) root.append(svg("text", { x: W / 2, y: H / 2, class: "axis-label", "text-anchor": "middle" }, "no data"));
  container.replaceChildren(root);
  return root;
}

// GB/T 2260: the region a code belongs to one level up (330106 → 330100 → 330000 → null).
export function parentRegion(code) {
  if (!/^\d{6}$/.test(code)) return null;
  if (code.slice(4) !== "00") return code.slice(0, 4) + "00";
  if (code.slice(2) !== "0000") return code.slice(0, 2) + "0000";
  return null;
}

// levels: answers at successive region levels, top first ([{cells, labels}, ...]); regions are
// nested under their GB/T 2260 parent when it is in the level above, else shown at the top.
// Each entry: name, value, and a bar proportional to the largest value of its level.
export function regionTree(container, levels, { unit = "" } = {}) {
  const list = el("ul", { class: "region-tree" });
  const items = new Map();
  levels.forEach((level, depth) => {
    const max = niceMax(Math.max(0, ...level.cells.map(plotted)));
    const cells = [...level.cells].sort((a, b) => a.region.localeCompare(b.region));
    for (const cell of cells) {
      // A municipality (110000) is its own prefecture-level unit: the same region, shown once.
      if (items.has(cell.region)) continue;
      const text = cellText(cell, unit);
      const bar = svg("svg", { viewBox: "0 0 100 8", class: "tree-bar", preserveAspectRatio: "none" });
      if (cell.suppressed) bar.append(svg("rect", { x: 0, y: 0, width: 100, height: 8, class: "bar-suppressed" }));
      else bar.append(svg("rect", { x: 0, y: 0, width: ((plotted(cell) / max) * 100).toFixed(1), height: 8, class: "bar" }));
      const item = el(
        "li",
        {
          class: "region-node" + (cell.suppressed ? " suppressed" : ""),
          dataset: { region: cell.region, depth: String(depth), value: cell.value_text ?? "" },
        },
        el(
          "div",
          { class: "region-line" },
          el("span", { class: "region-name" }, regionName(level.labels, cell.region)),
          bar,
          el("span", { class: "region-value" }, text)
        )
      );
      items.set(cell.region, item);
      let up = parentRegion(cell.region);
      while (up && !items.has(up)) up = parentRegion(up);
      const parent = up ? items.get(up) : undefined;
      if (parent) {
        let sub = parent.querySelector(":scope > ul");
        if (!sub) {
          sub = el("ul");
          parent.append(sub);
        }
        sub.append(item);
      } else {
        list.append(item);
      }
    }
  });
  if (items.size === 0) list.append(el("li", { class: "muted" }, "no data"));
  container.replaceChildren(list);
  return list;
}
