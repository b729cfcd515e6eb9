// Small, pure formatting helpers and a DOM builder (no innerHTML: every text is a text node).

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export function seconds(s) {
  if (s === null || s === undefined) return "–";
  if (s < 1) return (s * 1000).toFixed(0) + " ms";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  if (s < 172800) return (s / 3600).toFixed(1) + " h";
  return (s / 86400).toFixed(1) + " d";
}

const NUMBER = new Intl.NumberFormat("en");

export function count(n) {
  if (n === null || n === undefined) return "–";
  return NUMBER.format(Number(n));
}

export function ago(ms, nowMs) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, (nowMs - ms) / 1000);
  return seconds(s) + " ago";
}

export function timestamp(ms) {
  if (ms === null || ms === undefined) return "–";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

export function clockTime(ms) {
  return new Date(ms).toISOString().slice(11, 19);
}
