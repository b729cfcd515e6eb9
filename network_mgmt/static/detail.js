// The drill-down for one node: its entry from the tree, its links, recent errors, quarantined
// (poison) batches and the received records it holds aside as invalid, rendered from `/v1/network/node/{id}`. Lists are drawn generically (one
// column per field, `*_ms` fields as UTC times) so that fields added to the API show up without
// a page change.
//
// Operator actions act on the node that serves this page (its own upward link and its own
// quarantine), so their buttons appear only in that node's drill-down and only while an operator
// token is present; the API still decides (a refused token shows its error here).

import { postJSON } from "./api.js";
import { count, el, seconds, timestamp } from "./format.js";

// 5a's admin API (network_mgmt/admin_api.py). One place to change if the paths move.
export const ADMIN = {
  link: (peer, action) => `/v1/admin/links/${encodeURIComponent(peer)}/${action}`,
  batch: (batchId, action) => `/v1/admin/quarantine/${encodeURIComponent(batchId)}/${action}`,
  held: (heldId, action) => `/v1/admin/held/${encodeURIComponent(heldId)}/${action}`,
};

const HIDDEN = new Set(["links", "recent_errors", "quarantined", "held_records", "transitions"]);

function value(key, v) {
  if (v === null || v === undefined || v === "") return "–";
  // `*_ms` fields are times (epoch ms) unless small: offsets and durations are in ms too.
  if (key.endsWith("_ms") && typeof v === "number") return Math.abs(v) >= 1e11 ? timestamp(v) : `${count(v)} ms`;
  if (key.endsWith("_s") && typeof v === "number") return seconds(v);
  if (Array.isArray(v)) return v.map((x) => (typeof x === "object" ? JSON.stringify(x) : String(x))).join(" – ");
  if (typeof v === "object") return JSON.stringify(v);
  if (typeof v === "number") return count(v);
  return String(v);
}

function facts(doc) {
  const rows = Object.entries(doc)
    .filter(([k]) => !HIDDEN.has(k))
    .map(([k, v]) => el("tr", {}, el("th", {}, k.replaceAll("_", " ")), el("td", {}, value(k, v))));
  return el("table", { class: "facts" }, el("tbody", {}, rows));
}

function listTable(items, extra) {
  if (!items || items.length === 0) return el("p", { class: "muted" }, "none");
  const keys = [];
  for (const it of items) for (const k of Object.keys(it)) if (!keys.includes(k)) keys.push(k);
  const head = el("tr", {}, keys.map((k) => el("th", {}, k.replaceAll("_", " "))), extra ? el("th", {}, "") : null);
  const body = items.map((it) =>
    el("tr", {}, keys.map((k) => el("td", {}, value(k, it[k]))), extra ? el("td", { class: "actions" }, extra(it)) : null)
  );
  return el("table", { class: "grid compact" }, el("thead", {}, head), el("tbody", {}, body));
}

export function renderDetail(container, doc, { isSelf, operator, onAction }) {
  const act = (label, path, body, confirmText) =>
    el(
      "button",
      {
        type: "button",
        class: "action",
        dataset: { action: label },
        onclick: () => onAction(label, path, body, confirmText),
      },
      label
    );
  const canAct = isSelf && operator;
  const linkActions = canAct
    ? (link) => [
        act("retry", ADMIN.link(link.peer, "retry"), {}),
        act("pause", ADMIN.link(link.peer, "pause"), { reason: "" }, "Reason for pausing the link"),
        act("resume", ADMIN.link(link.peer, "resume"), { reason: "" }, "Reason for resuming (optional)"),
      ]
    : null;
  const batchActions = canAct
    ? (b) => [
        act("replay", ADMIN.batch(b.batch_id, "replay"), { reason: "" }, "Reason for replaying this batch"),
        act("skip", ADMIN.batch(b.batch_id, "skip"), { reason: "" }, "Reason for skipping this batch (it is never delivered)"),
      ]
    : null;
  const heldActions = canAct
    ? (h) => [
        act("replay", ADMIN.held(h.id, "replay"), { reason: "" }, "Reason for replaying this record (it is validated again)"),
        act("skip", ADMIN.held(h.id, "skip"), { reason: "" }, "Reason for leaving this record out for good"),
      ]
    : null;
  const note = isSelf
    ? operator
      ? null
      : el("p", { class: "muted" }, "Read-only: paste an operator token above to retry, pause, resume, replay or skip.")
    : el("p", { class: "muted" }, "Actions on this node's link are taken on its own dashboard (its node address).");
  const quarantined = doc.quarantined || [];
  const quarantineNote =
    !isSelf && doc.quarantined_count ? el("p", {}, `${doc.quarantined_count} batch(es) quarantined at that node.`) : null;
  const heldNote =
    !isSelf && doc.held_records_count ? el("p", {}, `${doc.held_records_count} record(s) held aside at that node.`) : null;
  const parts = [
    facts(doc),
    note,
    el("h3", {}, "Links"),
    listTable(doc.links, linkActions),
    el("h3", {}, "Recent errors"),
    listTable(doc.recent_errors),
    el("h3", {}, "Quarantined batches"),
    quarantineNote,
    listTable(quarantined, batchActions),
    el("h3", {}, "Received records held aside (invalid here)"),
    heldNote,
    isSelf ? listTable(doc.held_records || [], heldActions) : null,
  ];
  container.replaceChildren(...parts.filter((p) => p !== null));
}
