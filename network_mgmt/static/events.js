// The security event feed of the subtree (`/v1/security/events`), newest first. Entries whose
// origin signature the serving node could not verify are flagged.

import { el, timestamp } from "./format.js";

export function renderEvents(tbody, events) {
  if (!events || events.length === 0) {
    tbody.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no security events")));
    return;
  }
  tbody.replaceChildren(
    ...events.map((e) =>
      el(
        "tr",
        { class: e.verified ? "" : "unverified", dataset: { origin: e.origin, kind: e.kind } },
        el("td", {}, timestamp(e.time_ms)),
        el("td", {}, e.origin),
        el("td", {}, e.kind),
        el("td", {}, e.code || "–"),
        el("td", {}, e.peer || "–"),
        el("td", {}, e.verified ? "yes" : "NO")
      )
    )
  );
}
