// The REST API as the page uses it: tokens, JSON requests, uploads, downloads.
//
// Tokens live in sessionStorage (this tab only, gone when it closes). The
// access token is refreshed with the refresh token shortly before it expires
// and once more when a request answers 401 token_expired.

import { dispositionName } from "./util.js";

const STORE = "ams.session";
const API = "/api/v1";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `Request failed (${status}).`);
    this.status = status;
    this.code = (body && body.code) || "error";
    this.errors = (body && body.errors) || null;
  }
}

let session = load();
const listeners = new Set();

function load() {
  try {
    return JSON.parse(sessionStorage.getItem(STORE)) || null;
  } catch {
    return null;
  }
}

function save(next) {
  session = next;
  if (next) sessionStorage.setItem(STORE, JSON.stringify(next));
  else sessionStorage.removeItem(STORE);
  for (const listener of listeners) listener(session);
}

/** Calls ``listener(session)`` whenever the user logs in or out. */
export function onSessionChange(listener) {
  listeners.add(listener);
}

export function currentSession() {
  return session;
}

function expiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part)).exp * 1000;
  } catch {
    return 0;
  }
}

async function readBody(response) {
  const type = response.headers.get("Content-Type") || "";
  if (type.includes("application/json")) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }
  return null;
}

async function postJson(path, body, token) {
  const headers = { "Content-Type": "application/json", Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(API + path, {
    method: "POST",
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await readBody(response);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export async function register(email, password) {
  return postJson("/auth/register", { email, password });
}

export async function login(email, password) {
  const tokens = await postJson("/auth/login", { email, password });
  save({ email, access: tokens.access_token, refresh: tokens.refresh_token });
  return session;
}

/** Revokes the session on the server (best effort) and forgets the tokens. */
export async function logout() {
  const token = session && (session.refresh || session.access);
  save(null);
  if (token) {
    try {
      await postJson("/auth/logout", undefined, token);
    } catch {
      // The tokens are forgotten either way; an expired one needs no revoking.
    }
  }
}

let refreshing = null;

async function refreshAccess() {
  if (!session || !session.refresh) throw new ApiError(401, { message: "Please log in." });
  if (!refreshing) {
    const refresh = session.refresh;
    refreshing = postJson("/auth/refresh", undefined, refresh)
      .then((tokens) => {
        if (session && session.refresh === refresh) save({ ...session, access: tokens.access_token });
      })
      .catch((error) => {
        // Only a refused refresh token ends the session; a rate limit (429)
        // or a network error leaves it for the next try.
        if (error.status !== 401) throw error;
        save(null);
        throw new ApiError(401, { message: "Your session has ended; please log in again.", code: error.code });
      })
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

/** A valid access token, refreshed first when it expires within 30 s. */
export async function accessToken() {
  if (!session) throw new ApiError(401, { message: "Please log in." });
  if (expiry(session.access) - Date.now() < 30_000) await refreshAccess();
  if (!session) throw new ApiError(401, { message: "Please log in." });
  return session.access;
}

/**
 * fetch() with the Bearer token; retries once after refreshing when the server
 * says the token expired. Returns the Response (callers read the body).
 */
export async function authFetch(path, options = {}) {
  for (let attempt = 0; ; attempt++) {
    const token = await accessToken();
    const headers = { ...(options.headers || {}), Authorization: `Bearer ${token}` };
    const response = await fetch(path, { ...options, headers });
    if (response.status === 401 && attempt === 0) {
      const body = await readBody(response.clone());
      if (body && body.code === "token_expired") {
        await refreshAccess();
        continue;
      }
      if (body && (body.code === "token_revoked" || body.code === "invalid_token")) save(null);
    }
    return response;
  }
}

/** JSON request to the API; throws ApiError with the server's message. */
export async function api(path, { method = "GET", json, signal } = {}) {
  const options = { method, headers: { Accept: "application/json" }, signal };
  if (json !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(json);
  }
  const response = await authFetch(path.startsWith("/") ? path : `${API}/${path}`, options);
  const data = await readBody(response);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** A result file (or any authenticated download): ``{blob, filename}``. */
export async function fetchFile(url, { signal } = {}) {
  const response = await authFetch(url, { signal });
  if (!response.ok) throw new ApiError(response.status, await readBody(response));
  const blob = await response.blob();
  return { blob, filename: dispositionName(response.headers.get("Content-Disposition")) };
}

/**
 * POST a multipart form with upload progress (fetch() cannot report it).
 * ``onProgress(fraction)`` is called as bytes go out; the returned object has
 * ``promise`` (resolves to the JSON body) and ``abort()``.
 */
export function upload(path, formData, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = (async () => {
    const token = await accessToken();
    return new Promise((resolve, reject) => {
      xhr.open("POST", `${API}/${path}`);
      xhr.setRequestHeader("Authorization", `Bearer ${token}`);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.responseType = "json";
      xhr.upload.onprogress = (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      };
      xhr.upload.onload = () => onProgress(1);
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
        else reject(new ApiError(xhr.status, xhr.response));
      };
      xhr.onerror = () =>
        reject(new ApiError(0, { message: "The upload failed: the server could not be reached.", code: "network" }));
      xhr.onabort = () => reject(new ApiError(0, { message: "Upload stopped.", code: "aborted" }));
      xhr.send(formData);
    });
  })();
  return { promise, abort: () => xhr.abort() };
}
