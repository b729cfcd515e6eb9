// STATISTICS PANEL SLOT — intentionally empty.
//
// The statistics charts (indicators computed by federated queries, DESIGN §7) are added here by
// a later issue. app.js calls `mountStatistics` once after the page has loaded, with the panel
// element (`#stats-panel`, hidden until something is put in it) and the page's API helpers
// (`getJSON`, `postJSON`, `el`, `lineChart`). Unhide the panel when there is something to show.
// Keep to the page's rules: no inline scripts or styles, no third-party code, no CDN.

export function mountStatistics(panel, helpers) {
  void panel;
  void helpers;
}
