// The topology table: every node of the subtree in tree order (depth-first from the root),
// indented by depth, coloured by health (green up, red down, grey unknown), with lag, backlog,
// release (flagged when it differs from the root's) and last seen. Clicking a row (or Enter on
// it) selects the node for the drill-down.
//
// Large trees stay usable: a node with children can be collapsed (its row then counts what is
// below it and turns red when anything below is down), a text filter matches ids and names, and
// "only nodes needing attention" hides the healthy ones. While filtering, matches are shown
// whatever is collapsed.

import { ago, count, el, seconds } from "./format.js";

// Nodes with children start collapsed when the tree has more nodes than this.
export const COLLAPSE_ABOVE = 200;

function children(nodes, rootId) {
  const byParent = new Map();
  const ids = new Set(nodes.map((n) => n.node_id));
  for (const n of nodes) {
    const p = n.node_id === rootId || !ids.has(n.parent) ? null : n.parent;
    if (!byParent.has(p)) byParent.set(p, []);
    byParent.get(p).push(n);
  }
  for (const list of byParent.values()) list.sort((a, b) => a.node_id.localeCompare(b.node_id));
  const tops = byParent.get(null) || [];
  tops.sort((a, b) => (a.node_id === rootId ? -1 : b.node_id === rootId ? 1 : 0));
  return byParent;
}

// [[node, depth, below], ...] depth-first; `below` counts the health of a node's descendants.
// Children of nodes in `collapsed` are left out (but still counted in `below`).
export function treeOrder(nodes, rootId, collapsed = new Set()) {
  const byParent = children(nodes, rootId);
  const out = [];
  const seen = new Set();
  const walk = (n, depth, hidden) => {
    if (seen.has(n.node_id)) return { up: 0, down: 0, unknown: 0, total: 0 };
    seen.add(n.node_id);
    const entry = [n, depth, null];
    if (!hidden) out.push(entry);
    const below = { up: 0, down: 0, unknown: 0, total: 0 };
    const hide = hidden || collapsed.has(n.node_id);
    for (const c of byParent.get(n.node_id) || []) {
      const sub = walk(c, depth + 1, hide);
      below[c.health in below ? c.health : "unknown"] += 1;
      for (const k of ["up", "down", "unknown", "total"]) below[k] += sub[k];
      below.total += 1;
    }
    entry[2] = below;
    return below;
  };
  for (const n of byParent.get(null) || []) walk(n, 0, false);
  for (const n of nodes) walk(n, 0, false); // anything left in a cycle: still shown
  return out;
}

export function summarise(nodes) {
  const c = { up: 0, down: 0, unknown: 0 };
  for (const n of nodes) c[n.health in c ? n.health : "unknown"] += 1;
  return `${nodes.length} nodes · ${c.up} up · ${c.down} down · ${c.unknown} unknown`;
}

// The nodes that start collapsed: those with children, in a tree above COLLAPSE_ABOVE nodes.
export function defaultCollapsed(nodes, rootId) {
  if (nodes.length <= COLLAPSE_ABOVE) return new Set();
  const parents = new Set(nodes.map((n) => n.parent));
  return new Set(nodes.filter((n) => n.node_id !== rootId && parents.has(n.node_id)).map((n) => n.node_id));
}

// A node needs attention when it is not up, runs another release than the root, holds
// quarantined batches or held-aside records, or lags by a minute or more.
export const ATTENTION_LAG_S = 60;

export function needsAttention(n, rootRelease) {
  return (
    n.health !== "up" ||
    Boolean(rootRelease && n.release && n.release !== rootRelease) ||
    (n.quarantined || 0) > 0 ||
    (n.held_records || 0) > 0 ||
    (n.lag_s || 0) >= ATTENTION_LAG_S
  );
}

export function matches(n, text) {
  const t = text.trim().toLowerCase();
  return t === "" || n.node_id.toLowerCase().includes(t) || (n.name || "").toLowerCase().includes(t);
}

function belowText(below) {
  const parts = [`${below.total} below`];
  if (below.down) parts.push(`${below.down} down`);
  if (below.unknown) parts.push(`${below.unknown} unknown`);
  return parts.join(" · ");
}

// Draws the rows; returns how many nodes are shown. `view`: {text, problemsOnly, collapsed: Set,
// onToggle(nodeId)}.
export function renderTree(tbody, doc, selectedId, onSelect, view = {}) {
  const { text = "", problemsOnly = false, collapsed = new Set(), onToggle = () => {} } = view;
  const rootEntry = doc.nodes.find((n) => n.node_id === doc.root);
  const rootRelease = rootEntry ? rootEntry.release : null;
  const filtering = text.trim() !== "" || problemsOnly;
  const shown = treeOrder(doc.nodes, doc.root, filtering ? new Set() : collapsed).filter(
    ([n]) => matches(n, text) && (!problemsOnly || needsAttention(n, rootRelease))
  );
  const rows = shown.map(([n, depth, below]) => {
    const health = ["up", "down", "unknown"].includes(n.health) ? n.health : "unknown";
    const behind = rootRelease && n.release && n.release !== rootRelease;
    const lagTitle = n.e2e_lag_s !== undefined && n.e2e_lag_s !== null ? `end-to-end probe: ${seconds(n.e2e_lag_s)}` : undefined;
    const foldable = below.total > 0 && !filtering && n.node_id !== doc.root;
    const isCollapsed = foldable && collapsed.has(n.node_id);
    const toggle =
      foldable
        ? el(
            "button",
            {
              type: "button",
              class: "toggle",
              dataset: { toggle: n.node_id },
              "aria-expanded": isCollapsed ? "false" : "true",
              title: isCollapsed ? "show the nodes below" : "hide the nodes below",
            },
            isCollapsed ? "▸" : "▾"
          )
        : el("span", { class: "toggle-space" });
    return el(
      "tr",
      {
        class:
          `node-row health-${health}` +
          (n.node_id === selectedId ? " selected" : "") +
          (isCollapsed && below.down + below.unknown > 0 ? " trouble-below" : ""),
        dataset: { nodeId: n.node_id, health },
        tabindex: 0,
        "aria-selected": n.node_id === selectedId ? "true" : "false",
      },
      el(
        "td",
        { class: `node-name depth-${Math.min(depth, 6)}` },
        toggle,
        el("span", { class: "dot" }),
        el("strong", {}, n.name || n.node_id),
        " ",
        el("span", { class: "muted" }, `${n.node_id} · ${n.level}`),
        isCollapsed ? el("span", { class: "below" }, belowText(below)) : null
      ),
      el("td", {}, el("span", { class: `badge badge-${health}` }, health)),
      el("td", { class: "num", title: lagTitle }, seconds(n.lag_s)),
      el("td", { class: "num" }, count(n.backlog)),
      el("td", { class: behind ? "behind" : undefined, title: behind ? `root runs ${rootRelease}` : undefined }, n.release || "–"),
      el("td", {}, n.node_id === doc.root ? "live" : ago(n.last_seen_ms, doc.generated_ms))
    );
  });
  tbody.replaceChildren(...rows);
  // One delegated handler per table (properties, not inline handlers: allowed by the CSP).
  const pick = (ev) => {
    const button = ev.target.closest("button.toggle");
    if (button && tbody.contains(button)) {
      onToggle(button.dataset.toggle);
      return;
    }
    const row = ev.target.closest("tr.node-row");
    if (row && tbody.contains(row)) onSelect(row.dataset.nodeId);
  };
  tbody.onclick = pick;
  tbody.onkeydown = (ev) => {
    if (ev.key === "Enter" || ev.key === " ") {
      ev.preventDefault();
      pick(ev);
    }
  };
  return rows.length;
}
