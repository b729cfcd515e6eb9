// The dashboard's main loop: poll the node every few seconds (`?refresh=N` seconds, 1..60,
// default 3), render the tree, the selected node, the charts and the security feed, and show
// how fresh the data is (stale after three missed polls). Charts come from a bounded rolling
// history kept in this tab (history.js); nothing is stored on the server for them.

import { renderAlerts } from "./alerts.js";
import { ApiError, getJSON, getToken, postJSON, setToken } from "./api.js";
import { lineChart } from "./charts.js";
import { renderDetail } from "./detail.js";
import { renderEvents } from "./events.js";
import { ago, el } from "./format.js";
import { RateTracker, RollingHistory } from "./history.js";
import { mountStatistics } from "./stats.js";
import { defaultCollapsed, renderTree, summarise } from "./tree.js";

const params = new URLSearchParams(location.search);
const POLL_MS = Math.min(60, Math.max(1, Number(params.get("refresh")) || 3)) * 1000;
const STALE_MS = 3 * POLL_MS;
const WINDOW_MS = 15 * 60 * 1000;
const LAG_LINES = 6;
const RATE_LINES = 5;

const $ = (id) => document.getElementById(id);

const state = {
  tree: null,
  treeOkAt: null, // browser time of the last successful tree poll
  lastError: null,
  selected: decodeURIComponent((location.hash.match(/^#node=(.+)$/) || [])[1] || ""),
  history: new RollingHistory({ windowMs: WINDOW_MS, maxPoints: Math.ceil(WINDOW_MS / POLL_MS) + 5 }),
  rates: new RateTracker(),
  collapsed: new Set(), // node ids whose subtree is hidden
  collapseDecided: new Set(), // node ids already collapsed by default or toggled by the operator
  polls: 0,
  stats: null, // the statistics panel (stats.js), told when the operator token changes
};

function isOperator() {
  return getToken() !== "";
}

function showOperatorState() {
  const op = isOperator();
  $("token-form").hidden = op;
  $("token-state").hidden = !op;
  document.body.classList.toggle("operator", op);
}

function showFreshness() {
  const box = $("freshness");
  const now = Date.now();
  if (state.treeOkAt === null) {
    box.dataset.state = state.lastError ? "error" : "loading";
    box.textContent = state.lastError ? `no data: ${state.lastError}` : "loading…";
    return;
  }
  const stale = now - state.treeOkAt > STALE_MS;
  box.dataset.state = stale ? "stale" : "fresh";
  box.textContent = stale
    ? `STALE — last update ${ago(state.treeOkAt, now)}` + (state.lastError ? ` (${state.lastError})` : "")
    : `live · updated ${ago(state.treeOkAt, now)} · every ${POLL_MS / 1000} s`;
}

function select(nodeId) {
  state.selected = nodeId;
  history.replaceState(null, "", `${location.pathname}${location.search}#node=${encodeURIComponent(nodeId)}`);
  if (state.tree) drawTree();
  refreshDetail();
}

function toggle(nodeId) {
  state.collapseDecided.add(nodeId);
  if (state.collapsed.has(nodeId)) state.collapsed.delete(nodeId);
  else state.collapsed.add(nodeId);
  drawTree();
}

function drawTree() {
  const doc = state.tree;
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.nodeId : undefined;
  const tbody = $("tree").tBodies[0];
  // Nodes seen for the first time in a large tree start collapsed; the operator's choices stay.
  for (const id of defaultCollapsed(doc.nodes, doc.root)) {
    if (!state.collapseDecided.has(id)) {
      state.collapseDecided.add(id);
      state.collapsed.add(id);
    }
  }
  const view = {
    text: $("tree-filter").value,
    problemsOnly: $("problems-only").checked,
    collapsed: state.collapsed,
    onToggle: toggle,
  };
  const shown = renderTree(tbody, doc, state.selected, select, view);
  $("tree-shown").textContent = shown === doc.nodes.length ? "" : `${shown} of ${doc.nodes.length} shown`;
  if (focused) {
    const row = tbody.querySelector(`tr[data-node-id="${CSS.escape(focused)}"]`);
    if (row) row.focus();
  }
  $("summary").textContent = `· ${summarise(doc.nodes)}`;
  const root = doc.nodes.find((n) => n.node_id === doc.root);
  const title = root ? `${root.name || root.node_id} (${root.level})` : doc.root;
  $("root-title").textContent = title;
  document.title = `lsnet · ${title}`;
}

function drawCharts(now) {
  const tree = state.tree;
  const present = tree ? tree.nodes.map((n) => n.node_id) : [];
  const lagged = present
    .map((id) => [id, state.history.latest("lag:" + id)])
    .filter(([, v]) => v !== null)
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .slice(0, LAG_LINES)
    .map(([id]) => id);
  if (state.selected && !lagged.includes(state.selected) && state.history.get("lag:" + state.selected).length) {
    lagged.push(state.selected);
  }
  lineChart(
    $("lag-chart"),
    lagged.map((id) => ({ name: id, points: state.history.get("lag:" + id) })),
    { nowMs: now, windowMs: WINDOW_MS, empty: "no lag reported yet" }
  );
  const origins = state.history
    .keys()
    .filter((k) => k.startsWith("rate:") && k !== "rate:*")
    .map((k) => [k, state.history.get(k).reduce((s, [, v]) => s + v, 0)])
    .sort((a, b) => b[1] - a[1])
    .slice(0, RATE_LINES)
    .map(([k]) => k);
  const series = [{ name: "all origins", points: state.history.get("rate:*"), dashed: true }].concat(
    origins.map((k) => ({ name: k.slice(5), points: state.history.get(k) }))
  );
  lineChart($("throughput-chart"), series, { nowMs: now, windowMs: WINDOW_MS, empty: "measuring…" });
}

async function refreshDetail() {
  const box = $("detail");
  if (!state.selected) return;
  $("detail-title").textContent = state.selected;
  try {
    const doc = await getJSON(`/v1/network/node/${encodeURIComponent(state.selected)}`);
    if (doc.node_id !== state.selected) return; // selection changed meanwhile
    renderDetail(box, doc, {
      isSelf: state.tree !== null && doc.node_id === state.tree.root,
      operator: isOperator(),
      onAction: runAction,
    });
  } catch (err) {
    box.replaceChildren(el("p", { class: "error" }, `cannot load ${state.selected}: ${err.message}`));
  }
}

async function runAction(label, path, body, confirmText) {
  const out = $("action-result");
  const payload = { ...body };
  if (confirmText) {
    const reason = window.prompt(confirmText);
    if (reason === null) return;
    payload.reason = reason;
  }
  out.textContent = `${label}…`;
  try {
    const res = await postJSON(path, payload);
    out.textContent = `${label}: done` + (res && res.message ? ` — ${res.message}` : "");
    out.className = "ok";
  } catch (err) {
    const hint = err instanceof ApiError && err.status === 401 ? " (check the operator token)" : "";
    out.textContent = `${label} refused: ${err.message}${hint}`;
    out.className = "error";
  }
  refreshDetail();
}

async function pollTree(now) {
  try {
    const doc = await getJSON("/v1/network/tree");
    state.tree = doc;
    state.treeOkAt = Date.now();
    state.lastError = null;
    for (const n of doc.nodes) state.history.add("lag:" + n.node_id, now, n.lag_s);
    drawTree();
  } catch (err) {
    state.lastError = err.message || String(err);
  }
}

async function pollThroughput(now) {
  try {
    const status = await getJSON("/v1/status");
    const byOrigin = status.records_by_origin || {};
    let total = 0;
    let known = true;
    for (const [origin, r] of Object.entries(state.rates.rates(now, byOrigin))) {
      if (r === null) known = false;
      else {
        total += r;
        state.history.add("rate:" + origin, now, r);
      }
    }
    if (known && Object.keys(byOrigin).length) state.history.add("rate:*", now, total);
  } catch {
    // the tree poll reports reachability; a missing sample only leaves a gap in the chart
  }
}

async function pollEvents() {
  const note = $("events-note");
  if (!getToken()) {
    // The security view is for operators; without a token there is nothing to ask for.
    $("events").tBodies[0].replaceChildren();
    note.textContent = "(needs an operator token)";
    return;
  }
  try {
    const doc = await getJSON("/v1/security/events?limit=50");
    renderEvents($("events").tBodies[0], doc.events);
    note.textContent = `(${doc.events.length} newest)`;
  } catch (err) {
    note.textContent = err instanceof ApiError && err.status === 401 ? "(needs an operator token)" : `(unavailable: ${err.message})`;
  }
}

async function pollAlerts() {
  const note = $("alerts-note");
  try {
    const doc = await getJSON("/v1/network/alerts");
    renderAlerts($("alerts"), doc.alerts, select);
    const critical = doc.alerts.filter((a) => a.severity === "critical").length;
    note.textContent = doc.alerts.length ? `(${doc.alerts.length}, ${critical} critical)` : "";
  } catch (err) {
    note.textContent = `(unavailable: ${err.message})`;
  }
}

async function poll() {
  const now = Date.now();
  state.history.begin(now); // one history slot per poll, shared by the tree and the rates
  await Promise.all([pollTree(now), pollThroughput(now), pollEvents(), pollAlerts()]);
  if (state.selected) await refreshDetail();
  drawCharts(Date.now());
  showFreshness();
  state.polls += 1;
  document.body.dataset.polls = String(state.polls);
  setTimeout(poll, POLL_MS);
}

function init() {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("token-input");
    setToken(input.value.trim());
    input.value = "";
    showOperatorState();
    refreshDetail();
    if (state.stats) state.stats.tokenChanged();
  });
  $("token-clear").addEventListener("click", () => {
    setToken("");
    showOperatorState();
    refreshDetail();
    if (state.stats) state.stats.tokenChanged();
  });
  const redraw = () => state.tree && drawTree();
  $("tree-filter").addEventListener("input", redraw);
  $("problems-only").addEventListener("change", redraw);
  window.addEventListener("hashchange", () => {
    const m = location.hash.match(/^#node=(.+)$/);
    if (m) select(decodeURIComponent(m[1]));
  });
  showOperatorState();
  setInterval(showFreshness, 1000);
  try {
    state.stats = mountStatistics($("stats-panel"), { getJSON, postJSON, el, lineChart }) || null;
  } catch (err) {
    console.error("statistics panel failed", err);
  }
  poll();
}

init();
