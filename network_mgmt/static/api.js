// The node's JSON API as the page uses it. The operator token lives in sessionStorage only (gone
// when the tab closes) and is sent as `Authorization: Bearer` to every call while present.

const TOKEN_KEY = "lsnet.operatorToken";

export function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, body, timeoutMs) {
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), timeoutMs);
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
      signal: controller.signal,
    });
  } catch (err) {
    throw new ApiError(0, "unreachable", controller.signal.aborted ? "timed out" : String(err));
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(resp.status, e.code || "http_" + resp.status, e.message || resp.statusText);
  }
  return data;
}

export function getJSON(path, timeoutMs = 8000) {
  return call("GET", path, undefined, timeoutMs);
}

export function postJSON(path, body, timeoutMs = 15000) {
  return call("POST", path, body, timeoutMs);
}
