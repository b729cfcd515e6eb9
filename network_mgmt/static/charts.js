// Hand-written SVG line charts (no chart library): a time axis over the history window, a y
// axis from 0 to a rounded maximum, one polyline per series, a legend. Colours come from a
// fixed palette by series order; the caller decides which (few) series to draw.

import { clockTime } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#1565c0", "#ef6c00", "#6a1b9a", "#00838f", "#ad1457", "#558b2f", "#4e342e", "#37474f"];
const W = 640;
const H = 200;
const PAD = { left: 48, right: 12, top: 10, bottom: 24 };

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

export function niceMax(v) {
  if (!(v > 0)) return 1;
  const exp = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * exp) return m * exp;
  return 10 * exp;
}

function label(v) {
  if (v >= 1000) return (v / 1000).toFixed(v >= 10000 ? 0 : 1) + "k";
  if (v >= 10 || v === 0) return v.toFixed(0);
  return v.toPrecision(2);
}

// series: [{name, points: [[t, v], ...], dashed?}]; returns the <svg> (also placed into container).
// The time axis spans the history actually held (at least a minute, at most windowMs), so a
// freshly opened page shows its first samples across the chart rather than in a corner.
export function lineChart(container, series, { nowMs, windowMs, empty = "no samples yet" }) {
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "line-chart", role: "img" });
  let first = nowMs;
  for (const s of series) if (s.points.length) first = Math.min(first, s.points[0][0]);
  const span = Math.min(windowMs, Math.max(60_000, nowMs - first));
  const x0 = nowMs - span;
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  let ymax = 0;
  for (const s of series) for (const [, v] of s.points) ymax = Math.max(ymax, v);
  ymax = niceMax(ymax);
  const x = (t) => PAD.left + ((t - x0) / span) * plotW;
  const y = (v) => PAD.top + plotH - (v / ymax) * plotH;

  for (let i = 0; i <= 4; i++) {
    const v = (ymax * i) / 4;
    root.append(svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "grid-line" }));
    root.append(svg("text", { x: PAD.left - 6, y: y(v) + 4, class: "axis-label", "text-anchor": "end" }, label(v)));
  }
  for (let i = 0; i <= 4; i++) {
    const t = x0 + (span * i) / 4;
    root.append(svg("text", { x: x(t), y: H - 6, class: "axis-label", "text-anchor": "middle" }, clockTime(t)));
  }
  const drawn = series.filter((s) => s.points.length > 0);
  drawn.forEach((s, i) => {
    const pts = s.points.filter(([t]) => t >= x0).map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`);
    if (pts.length === 0) return;
    const colour = PALETTE[i % PALETTE.length];
    const attrs = { points: pts.join(" "), fill: "none", stroke: colour, "stroke-width": 2 };
    if (s.dashed) attrs["stroke-dasharray"] = "6 4";
    const line = svg("polyline", attrs);
    line.append(svg("title", {}, s.name));
    root.append(line);
  });
  if (drawn.length === 0) {
    root.append(svg("text", { x: W / 2, y: H / 2, class: "axis-label", "text-anchor": "middle" }, empty));
  }
  const legend = document.createElement("ul");
  legend.className = "legend";
  drawn.forEach((s, i) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = PALETTE[i % PALETTE.length];
    item.append(swatch, document.createTextNode(s.name));
    legend.append(item);
  });
  container.replaceChildren(root, legend);
  return root;
}
