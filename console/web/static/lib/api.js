// Talking to the relay: JSON over fetch with the session cookie, the CSRF token on every
// request that changes something, and WebSocket addresses on the same origin.

let csrfToken = "";
let unauthorized = () => {};

export function setCsrf(token) {
  csrfToken = token || "";
}

export function csrf() {
  return csrfToken;
}

export function onUnauthorized(callback) {
  unauthorized = callback;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = csrfToken;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, 0, "the relay cannot be reached");
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    const failure = new ApiError(response.status, error.code, error.message || response.statusText);
    if (response.status === 401 && path !== "/web/login") unauthorized(failure);
    throw failure;
  }
  return data;
}

export function socketUrl(path, params = {}) {
  const query = new URLSearchParams(params).toString();
  return `wss://${location.host}${path}${query ? "?" + query : ""}`;
}
