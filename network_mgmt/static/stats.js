// The Statistics panel (DESIGN §7): pick an indicator of the standards in force, a period range
// and whether to ask the subtree federated; then draw bars by region, a line over time and a
// map-like region tree (statcharts.js) from `GET /v1/stats/run/{indicator}`. The answer's
// completeness is always shown: which nodes answered, which did not, and cells withheld below
// the minimum cell size — a partial answer is never drawn as if it were whole. The status line
// is also the legend of the hidden cells: small cells, and their complements (secondary
// suppression: hidden so that a small cell cannot be recovered by subtraction).
//
// Operators only: without a token the panel says so and asks the node for nothing. It does not
// poll (statistics are asked for, not watched) and keeps nothing beyond the tab.

import { getToken } from "./api.js";
import { barChart, periodLine, regionTree } from "./statcharts.js";

const TIMEOUT_S = 10; // how long the node waits for its subtree in a federated run
const PERIOD = /^\d{4}(-\d{2}|Q[1-4])?$/; // a month 2025-01, a quarter 2025Q1 or a year 2025

function defaultRange() {
  const now = new Date();
  const y = now.getUTCFullYear();
  return [`${y}-01`, `${y}-${String(now.getUTCMonth() + 1).padStart(2, "0")}`];
}

export function mountStatistics(panel, helpers) {
  const { getJSON, el } = helpers;
  const [from0, to0] = defaultRange();
  const note = el("span", { id: "stats-note", class: "muted" });
  const picker = el("select", { id: "stats-indicator", "aria-label": "Indicator" });
  const from = el("input", { id: "stats-from", type: "text", value: from0, size: 8, "aria-label": "From period", spellcheck: "false" });
  const to = el("input", { id: "stats-to", type: "text", value: to0, size: 8, "aria-label": "To period", spellcheck: "false" });
  const federated = el("input", { id: "stats-federated", type: "checkbox" });
  const form = el(
    "form",
    { id: "stats-form", class: "stats-controls", autocomplete: "off" },
    el("label", {}, "Indicator ", picker),
    el("label", {}, "Period ", from, " to ", to),
    el("label", {}, federated, " federated (ask every node below)"),
    el("button", { type: "submit" }, "Show")
  );
  const status = el("p", { id: "stats-status", class: "muted", role: "status", "aria-live": "polite" });
  const bars = el("div", { id: "stats-bars", class: "chart" });
  const line = el("div", { id: "stats-line", class: "chart" });
  const tree = el("div", { id: "stats-tree" });
  const body = el(
    "div",
    { id: "stats-body" },
    form,
    status,
    el("h3", {}, "By region"),
    bars,
    el("h3", {}, "Over time"),
    line,
    el("h3", {}, "Region tree"),
    tree
  );
  panel.replaceChildren(el("h2", {}, "Statistics ", note), body);
  panel.hidden = false;

  let catalogue = [];
  let loadedFor = null; // the token the indicator list was loaded with
  let seq = 0; // answers to an older request are dropped

  const say = (text, cls = "muted") => {
    status.textContent = text;
    status.className = cls;
  };

  async function loadIndicators() {
    const token = getToken();
    if (!token) {
      seq += 1;
      loadedFor = null;
      catalogue = [];
      note.textContent = "(needs an operator token)";
      body.hidden = true;
      return;
    }
    body.hidden = false;
    if (loadedFor === token) return;
    loadedFor = token;
    note.textContent = "(loading indicators…)";
    try {
      const doc = await getJSON("/v1/stats/indicators");
      catalogue = doc.indicators.filter((i) => i.dimensions.includes("region") || i.dimensions.includes("period"));
      picker.replaceChildren(...catalogue.map((i) => el("option", { value: i.name }, `${i.title || i.name} (${i.name})`)));
      note.textContent = `(${doc.standards} at ${doc.node})`;
      say("Pick an indicator and a period range.");
      if (catalogue.length) run();
    } catch (err) {
      loadedFor = null;
      note.textContent = err.status === 401 ? "(the operator token was refused)" : `(unavailable: ${err.message})`;
    }
  }

  // Indicators reported per year only (e.g. average wage) are asked for the years of the range.
  function period(ind) {
    const [a, b] = [from.value.trim(), to.value.trim()];
    return ind.yearly ? `${a.slice(0, 4)}..${b.slice(0, 4)}` : `${a}..${b}`;
  }

  function url(ind, params) {
    const q = new URLSearchParams({ period: period(ind), timeout: String(TIMEOUT_S), ...params });
    if (federated.checked) q.set("federated", "1");
    return `/v1/stats/run/${encodeURIComponent(ind.name)}?${q}`;
  }

  function describe(docs) {
    const missing = new Map();
    let withheld = 0;
    const answered = new Set();
    for (const d of docs) {
      for (const m of d.missing) missing.set(m.node, m.reason);
      for (const n of d.answered) answered.add(n);
      withheld += d.cells.filter((c) => c.withheld_parts > 0).length;
    }
    const complete = docs.every((d) => d.complete);
    const estimated = docs.some((d) => d.estimated);
    const parts = [];
    if (docs[0].federated) {
      parts.push(complete ? `complete: answered by all ${answered.size} nodes` : `INCOMPLETE: answered by ${answered.size} nodes`);
    } else {
      parts.push(`from the records held at ${docs[0].node} (tick "federated" to ask every node below)`);
    }
    if (missing.size) parts.push("missing: " + [...missing].map(([n, r]) => `${n} (${r})`).join(", "));
    if (withheld) parts.push(`${withheld} cells withheld below the minimum cell size (${docs[0].min_cell})`);
    const hidden = (status) => docs.reduce((n, d) => n + d.cells.filter((c) => c.suppressed === status).length, 0);
    const small = hidden("primary") + hidden(true);
    const complements = hidden("secondary");
    if (small) parts.push(`"suppressed (small cell)": fewer than ${docs[0].min_cell} records`);
    if (complements) parts.push(`"suppressed (complement)": hidden so that a small cell cannot be recovered by subtraction`);
    if (estimated) parts.push("≈ marks estimates (distinct counts merged across nodes)");
    say(parts.join(" · "), complete ? "ok" : "error");
    status.dataset.complete = String(complete);
    status.dataset.missing = [...missing.keys()].join(" ");
  }

  async function run() {
    const ind = catalogue.find((i) => i.name === picker.value);
    if (!ind || !getToken()) return;
    const mine = ++seq;
    if (![from, to].every((i) => PERIOD.test(i.value.trim()))) {
      say("write periods as 2025-01 (month), 2025Q1 (quarter) or 2025 (year)", "error");
      return;
    }
    delete status.dataset.complete;
    say(`asking${federated.checked ? " the subtree" : ""}…`);
    const byRegion = ind.dimensions.includes("region");
    const byPeriod = ind.dimensions.includes("period");
    const asks = [
      byRegion ? getJSON(url(ind, { by: "region", level: "province" }), (TIMEOUT_S + 5) * 1000) : null,
      byRegion ? getJSON(url(ind, { by: "region", level: "prefecture" }), (TIMEOUT_S + 5) * 1000) : null,
      byPeriod ? getJSON(url(ind, { by: "period" }), (TIMEOUT_S + 5) * 1000) : null,
    ];
    let docs;
    try {
      docs = await Promise.all(asks);
    } catch (err) {
      if (mine === seq) say(`refused: ${err.message}`, "error");
      return;
    }
    if (mine !== seq) return;
    const [provinces, prefectures, periods] = docs;
    const unit = ind.unit || "";
    if (prefectures) {
      barChart(bars, prefectures.cells, { labels: prefectures.labels, unit });
      regionTree(tree, [provinces, prefectures], { unit });
    } else {
      bars.replaceChildren(el("p", { class: "muted" }, "this indicator has no region dimension"));
      tree.replaceChildren();
    }
    if (periods) periodLine(line, periods.cells, { periods: periods.periods, unit });
    else line.replaceChildren(el("p", { class: "muted" }, "this indicator has no period dimension"));
    describe(docs.filter(Boolean));
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    run();
  });
  picker.addEventListener("change", run);
  federated.addEventListener("change", run);
  loadIndicators();
  return { tokenChanged: loadIndicators };
}
