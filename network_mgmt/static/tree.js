// The topology table: every node of the subtree in tree order (depth-first from the root),
// indented by depth, coloured by health (green up, red down, grey unknown), with lag, backlog,
// release (flagged when it differs from the root's) and last seen. Clicking a row (or Enter on
// it) selects the node for the drill-down. A text filter and "only nodes needing attention"
// keep a tree of hundreds of nodes usable.

import { ago, count, el, seconds } from "./format.js";

export function treeOrder(nodes, rootId) {
  const byParent = new Map();
  const ids = new Set(nodes.map((n) => n.node_id));
  for (const n of nodes) {
    const p = n.node_id === rootId || !ids.has(n.parent) ? null : n.parent;
    if (!byParent.has(p)) byParent.set(p, []);
    byParent.get(p).push(n);
  }
  for (const list of byParent.values()) list.sort((a, b) => a.node_id.localeCompare(b.node_id));
  const out = [];
  const seen = new Set();
  const walk = (n, depth) => {
    if (seen.has(n.node_id)) return;
    seen.add(n.node_id);
    out.push([n, depth]);
    for (const c of byParent.get(n.node_id) || []) walk(c, depth + 1);
  };
  const tops = byParent.get(null) || [];
  tops.sort((a, b) => (a.node_id === rootId ? -1 : b.node_id === rootId ? 1 : 0));
  for (const n of tops) walk(n, 0);
  for (const n of nodes) walk(n, 0); // anything left in a cycle: still shown
  return out;
}

export function summarise(nodes) {
  const c = { up: 0, down: 0, unknown: 0 };
  for (const n of nodes) c[n.health in c ? n.health : "unknown"] += 1;
  return `${nodes.length} nodes · ${c.up} up · ${c.down} down · ${c.unknown} unknown`;
}

// A node needs attention when it is not up, runs another release than the root, holds
// quarantined batches, or lags by a minute or more.
export const ATTENTION_LAG_S = 60;

export function needsAttention(n, rootRelease) {
  return (
    n.health !== "up" ||
    Boolean(rootRelease && n.release && n.release !== rootRelease) ||
    (n.quarantined || 0) > 0 ||
    (n.lag_s || 0) >= ATTENTION_LAG_S
  );
}

export function matches(n, text) {
  const t = text.trim().toLowerCase();
  return t === "" || n.node_id.toLowerCase().includes(t) || (n.name || "").toLowerCase().includes(t);
}

// Draws the rows; returns how many of the nodes are shown under `filter` ({text, problemsOnly}).
export function renderTree(tbody, doc, selectedId, onSelect, filter = { text: "", problemsOnly: false }) {
  const rootEntry = doc.nodes.find((n) => n.node_id === doc.root);
  const rootRelease = rootEntry ? rootEntry.release : null;
  const shown = treeOrder(doc.nodes, doc.root).filter(
    ([n]) => matches(n, filter.text) && (!filter.problemsOnly || needsAttention(n, rootRelease))
  );
  const rows = shown.map(([n, depth]) => {
    const health = ["up", "down", "unknown"].includes(n.health) ? n.health : "unknown";
    const behind = rootRelease && n.release && n.release !== rootRelease;
    const lagTitle = n.e2e_lag_s !== undefined && n.e2e_lag_s !== null ? `end-to-end probe: ${seconds(n.e2e_lag_s)}` : undefined;
    const row = el(
      "tr",
      {
        class: `node-row health-${health}` + (n.node_id === selectedId ? " selected" : ""),
        dataset: { nodeId: n.node_id, health },
        tabindex: 0,
        "aria-selected": n.node_id === selectedId ? "true" : "false",
      },
      el(
        "td",
        { class: `node-name depth-${Math.min(depth, 6)}` },
        el("span", { class: "dot" }),
        el("strong", {}, n.name || n.node_id),
        " ",
        el("span", { class: "muted" }, `${n.node_id} · ${n.level}`)
      ),
      el("td", {}, el("span", { class: `badge badge-${health}` }, health)),
      el("td", { class: "num", title: lagTitle }, seconds(n.lag_s)),
      el("td", { class: "num" }, count(n.backlog)),
      el("td", { class: behind ? "behind" : undefined, title: behind ? `root runs ${rootRelease}` : undefined }, n.release || "–"),
      el("td", {}, n.node_id === doc.root ? "live" : ago(n.last_seen_ms, doc.generated_ms))
    );
    row.addEventListener("click", () => onSelect(n.node_id));
    row.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        onSelect(n.node_id);
      }
    });
    return row;
  });
  tbody.replaceChildren(...rows);
  return rows.length;
}
