// The alert conditions of the subtree (`/v1/network/alerts`, computed by the node from its tree:
// node down or unknown, lag above the threshold, backlog waiting on a stalled link, release
// behind, clock skew, …), most severe first. Clicking an alert selects its node.

import { el } from "./format.js";

export function renderAlerts(list, alerts, onSelect) {
  if (!alerts || alerts.length === 0) {
    list.replaceChildren(el("li", { class: "muted" }, "no alerts"));
    return;
  }
  list.replaceChildren(
    ...alerts.map((a) =>
      el(
        "li",
        { class: `alert alert-${a.severity}`, dataset: { alert: a.alert, node: a.node } },
        el("span", { class: `badge sev-${a.severity}` }, a.severity),
        " ",
        el("button", { type: "button", class: "link", onclick: () => onSelect(a.node) }, a.node),
        " ",
        el("strong", {}, a.alert.replaceAll("_", " ")),
        " — ",
        a.message
      )
    )
  );
}
