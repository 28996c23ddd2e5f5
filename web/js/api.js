// The HTTP API: base URL from config.json (empty: this origin), bearer token kept in
// localStorage, errors turned into ApiError with the server's reason.

const TOKEN_KEY = "cmschat.token";
let base = "";

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || "http_" + status;
    this.field = error.field;
  }
}

export async function loadConfig() {
  try {
    const response = await fetch("config.json", { cache: "no-cache" });
    if (response.ok) base = ((await response.json()).apiBase || "").replace(/\/$/, "");
  } catch { /* no config: same origin */ }
  return base;
}

export function apiBase() { return base; }

export function wsUrl() {
  const origin = base || window.location.origin;
  return origin.replace(/^http/, "ws") + "/api/v1/ws";
}

export const token = {
  get: () => localStorage.getItem(TOKEN_KEY),
  set: (value) => localStorage.setItem(TOKEN_KEY, value),
  clear: () => localStorage.removeItem(TOKEN_KEY),
};

// Device tokens, one per username signed in from this browser: sent with the next login,
// they give this browser a failure budget of its own, so a stranger guessing the password
// elsewhere cannot lock its owner out (docs/security.md, "Brute force"). Kept across
// sign-outs on purpose; a few names at most.
const DEVICES_KEY = "cmschat.devices";
const MAX_DEVICE_NAMES = 5;

function readDevices() {
  try { return JSON.parse(localStorage.getItem(DEVICES_KEY)) || {}; } catch { return {}; }
}

export const deviceTokens = {
  get: (username) => readDevices()[username.trim().toLowerCase()] || null,
  set: (username, value) => {
    const name = username.trim().toLowerCase();
    const devices = readDevices();
    delete devices[name];
    devices[name] = value;  // newest last; the oldest names go first
    const names = Object.keys(devices);
    for (const old of names.slice(0, Math.max(0, names.length - MAX_DEVICE_NAMES))) delete devices[old];
    localStorage.setItem(DEVICES_KEY, JSON.stringify(devices));
  },
};

export async function api(method, path, { body, query, raw } = {}) {
  const url = new URL(base + "/api/v1" + path, window.location.href);
  for (const [key, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
  }
  const headers = {};
  const bearer = token.get();
  if (bearer) headers.Authorization = "Bearer " + bearer;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(url, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (raw && response.ok) return response;
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401 && !path.startsWith("/auth/")) {
      token.clear();
      window.dispatchEvent(new CustomEvent("cmschat:signed-out"));
    }
    const error = new ApiError(response.status, data);
    error.retryAfter = Number(response.headers.get("Retry-After")) || undefined;
    throw error;
  }
  return data;
}

// Uploads go through XMLHttpRequest: fetch() cannot report upload progress.
export function upload(roomId, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${base}/api/v1/rooms/${roomId}/attachments`);
    xhr.setRequestHeader("Authorization", "Bearer " + token.get());
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener("load", () => {
      let data = null;
      try { data = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
      if (xhr.status === 201) resolve(data);
      else reject(new ApiError(xhr.status, data));
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, null)));
    const form = new FormData();
    form.append("file", file);
    xhr.send(form);
  });
}

// Files need the bearer token, which <img src> and <a href> cannot send: fetch them
// and hand the browser a blob: URL.
export async function fileUrl(attachmentId, inline = false) {
  const response = await api("GET", `/attachments/${attachmentId}`, {
    query: inline ? { disposition: "inline" } : {}, raw: true,
  });
  return URL.createObjectURL(await response.blob());
}
