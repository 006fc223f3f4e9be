// Small DOM and formatting helpers shared by the page's modules.

export const $ = (selector, root = document) => root.querySelector(selector);
export const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

/** An element with attributes and children; strings become text nodes (never HTML). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const announcer = () => document.getElementById("announcer");

/** Says ``message`` to screen readers through the page's aria-live region. */
export function announce(message) {
  const region = announcer();
  if (!region) return;
  // Clearing first makes a repeated message be read again.
  region.textContent = "";
  window.setTimeout(() => {
    region.textContent = message;
  }, 50);
}

export function formatSeconds(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "";
  const total = Math.max(0, value);
  const minutes = Math.floor(total / 60);
  const seconds = total - minutes * 60;
  return `${minutes}:${seconds.toFixed(1).padStart(4, "0")}`;
}

export function formatBytes(bytes) {
  if (!bytes && bytes !== 0) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  if (bytes < 1024 * 1024 * 1024) return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  return `${(bytes / 1024 / 1024 / 1024).toFixed(2)} GB`;
}

export function formatDate(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? iso : date.toLocaleString();
}

/** A job kind's label: its name, capitalised (no list of kinds here to keep up to date). */
export function kindLabel(kind) {
  return kind ? kind.charAt(0).toUpperCase() + kind.slice(1) : "";
}

let kinds = null;

/**
 * The job kinds this server runs: the ``kind`` filter of ``GET /api/v1/jobs``
 * in its OpenAPI document, which the server derives from its job-kind table.
 * Null when the document cannot be read (then every form the page has is offered).
 */
export function serverKinds() {
  kinds =
    kinds ||
    fetch("/openapi.json", { headers: { Accept: "application/json" } })
      .then((response) => (response.ok ? response.json() : null))
      .then((spec) => {
        const parameters = spec?.paths?.["/api/v1/jobs"]?.get?.parameters || [];
        const filter = parameters.find((parameter) => parameter.name === "kind");
        return Array.isArray(filter?.schema?.enum) ? filter.schema.enum : null;
      })
      .catch(() => null);
  return kinds;
}

export const STATUS_LABELS = {
  queued: "Queued",
  running: "Running",
  succeeded: "Done",
  failed: "Failed",
  canceled: "Canceled",
};

export const FINISHED = new Set(["succeeded", "failed", "canceled"]);

/** Offers ``blob`` as a download named ``name`` (object URL, revoked afterwards). */
export function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = h("a", { href: url, download: name || "download", class: "visually-hidden" });
  document.body.append(link);
  link.click();
  link.remove();
  window.setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** The file name a Content-Disposition header gives, RFC 6266 ``filename*`` first. */
export function dispositionName(header) {
  if (!header) return null;
  const star = /filename\*\s*=\s*UTF-8''([^;]+)/i.exec(header);
  if (star) {
    try {
      return decodeURIComponent(star[1].trim());
    } catch {
      // fall through to the plain form
    }
  }
  const plain = /filename\s*=\s*"([^"]*)"/i.exec(header) || /filename\s*=\s*([^;]+)/i.exec(header);
  return plain ? plain[1].trim() : null;
}
