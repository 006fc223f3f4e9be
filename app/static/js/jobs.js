// The job list: one card per job, kept live with Server-Sent Events from
// GET /api/v1/jobs/{id}/events where the server has that route, and by polling
// GET /api/v1/jobs/{id} where it does not (or when a stream breaks).

import { api, authFetch, ApiError } from "./api.js";
import { renderResults } from "./results.js";
import { readEvents } from "./sse.js";
import {
  $,
  announce,
  formatDate,
  formatSeconds,
  FINISHED,
  kindLabel,
  STATUS_LABELS,
} from "./util.js";

const POLL_MS = 1500;
// Browsers allow six HTTP/1.1 connections per host: leave room for the page.
const MAX_STREAMS = 3;
const PER_PAGE = 20;

const cards = new Map(); // job id -> {job, el, stream, cleanup: []}
const localFiles = new Map(); // job id -> File uploaded from this tab
let sse = "unknown"; // "unknown" (not asked yet) | "maybe" | "yes" | "no"
let pollTimer = null;
let page = 1;
let actions = {};

const list = () => $("#job-list");

/** ``handlers.regenerate(job, {edit})`` is called by a generation's buttons. */
export function initJobs(handlers) {
  actions = handlers;
  $("#refresh-jobs").addEventListener("click", () => loadJobs());
  $("#more-jobs").addEventListener("click", () => loadJobs({ more: true }));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) schedulePoll(0);
  });
}

export function rememberFile(jobId, file) {
  if (file) localFiles.set(jobId, file);
}

export function localFile(jobId) {
  return localFiles.get(jobId) || null;
}

/** Forgets every card (on logout). */
export function clearJobs() {
  for (const id of Array.from(cards.keys())) removeCard(id);
  localFiles.clear();
  page = 1;
  window.clearTimeout(pollTimer);
  pollTimer = null;
}

export async function loadJobs({ more = false } = {}) {
  const next = more ? page + 1 : 1;
  let body;
  try {
    body = await api(`jobs?page=${next}&per_page=${PER_PAGE}`);
  } catch (error) {
    announce(`Could not load your jobs: ${error.message}`);
    return;
  }
  page = next;
  if (!more) {
    const seen = new Set(body.items.map((job) => job.id));
    for (const id of Array.from(cards.keys())) {
      if (!seen.has(id) && page === 1 && cards.get(id).listedBefore) removeCard(id);
    }
  }
  for (const job of body.items) upsert(job, { append: true });
  if (!more) {
    // Newest first, as the server lists them (jobs created elsewhere included).
    for (const job of body.items.slice().reverse()) list().prepend(cards.get(job.id).el);
  }
  $("#more-jobs").hidden = body.total <= page * PER_PAGE;
  updateEmpty();
}

/** Adds a job the page just created, at the top of the list. */
export function addJob(job) {
  upsert(job, { append: false });
  updateEmpty();
  const card = cards.get(job.id);
  if (card) card.el.querySelector(".job-title").focus?.();
}

function updateEmpty() {
  $("#jobs-empty").hidden = cards.size > 0;
}

function describe(job) {
  const params = job.params || {};
  if (job.kind === "generation") return params.prompt ? `“${params.prompt}”` : "Generated music";
  return (job.input && job.input.filename) || "Audio";
}

function upsert(job, { append }) {
  let card = cards.get(job.id);
  if (!card) {
    const fragment = $("#job-template").content.cloneNode(true);
    const el = fragment.querySelector(".job");
    card = { job, el, stream: null, cleanup: [], listedBefore: append, resultsShown: false };
    cards.set(job.id, card);
    el.dataset.jobId = job.id;
    const title = el.querySelector(".job-title");
    title.id = `job-${job.id}-title`;
    title.tabIndex = -1;
    el.querySelector("article").setAttribute("aria-labelledby", title.id);
    el.querySelector("progress").setAttribute("aria-labelledby", title.id);
    el.querySelector('[data-action="results"]').addEventListener("click", () => toggleResults(job.id));
    el.querySelector('[data-action="cancel"]').addEventListener("click", () => cancel(job.id));
    el.querySelector('[data-action="delete"]').addEventListener("click", () => remove(job.id));
    if (append) list().append(el);
    else list().prepend(el);
    render(card, null);
  } else {
    const before = card.job;
    card.job = job;
    render(card, before);
  }
  follow(card);
  return card;
}

function render(card, before) {
  const { job, el } = card;
  el.dataset.status = job.status;
  el.querySelector(".job-title").textContent = `${kindLabel(job.kind)}: ${describe(job)}`;
  const params = job.params || {};
  const meta = [job.model];
  if (job.kind === "transcription" && params.isolate_vocals) meta.push(`vocals by ${params.separation_model}`);
  meta.push(formatDate(job.created_at));
  if (job.input && job.input.duration) meta.push(formatSeconds(job.input.duration));
  if (job.status === "succeeded" && job.metrics && job.metrics.run_seconds !== undefined) {
    meta.push(`took ${job.metrics.run_seconds.toFixed(1)} s`);
  }
  const metaEl = el.querySelector(".job-meta");
  metaEl.textContent = meta.filter(Boolean).join(" · ");
  // Why the server chose the separation model (karaoke, isolate_vocals) when the request named none.
  const choice = params.separation_model_choice;
  if (choice && choice.how !== "requested") metaEl.title = choice.reason;
  else metaEl.removeAttribute("title");
  const badge = el.querySelector(".badge");
  badge.textContent = STATUS_LABELS[job.status] || job.status;
  badge.dataset.status = job.status;

  const active = !FINISHED.has(job.status);
  const progress = el.querySelector("progress");
  const percent = Math.round((job.status === "succeeded" ? 1 : job.progress || 0) * 100);
  progress.value = percent;
  progress.setAttribute("aria-valuetext", `${percent}%${job.stage ? `, ${job.stage.replace(/_/g, " ")}` : ""}`);
  el.querySelector(".job-progress").hidden = !active;
  const stage =
    job.status === "queued" ? "waiting for a worker" : job.stage ? job.stage.replace(/_/g, " ") : job.status;
  el.querySelector(".job-stage").textContent = active ? `${percent}% · ${stage}` : "";

  const error = el.querySelector(".job-error");
  error.hidden = !job.error;
  error.textContent = job.error ? `${job.error.message} (${job.error.code})` : "";

  el.querySelector('[data-action="cancel"]').hidden = !active;
  const resultsButton = el.querySelector('[data-action="results"]');
  resultsButton.hidden = job.status !== "succeeded";

  if (before && before.status !== job.status) {
    announce(`${kindLabel(job.kind)} of ${describe(job)}: ${STATUS_LABELS[job.status] || job.status}.`);
  }
  if (job.status === "succeeded" && job.result && card.autoOpen && !card.resultsShown) {
    card.autoOpen = false;
    toggleResults(job.id);
  }
  if (job.status !== "succeeded" && card.resultsShown) hideResults(card);
}

// ------------------------------------------------------------------ live updates

/**
 * Whether this server streams job events: its OpenAPI document lists
 * ``/api/v1/jobs/{id}/events`` (asked once; no 404s in the console when it
 * does not). If the document cannot be read, streams are tried and a failure
 * falls back to polling.
 */
async function detectEvents() {
  try {
    const response = await fetch("/openapi.json", { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const spec = await response.json();
    const paths = Object.keys(spec.paths || {});
    sse = paths.some((path) => /^\/api\/v1\/jobs\/\{[^}]+\}\/events$/.test(path)) ? "yes" : "no";
  } catch {
    // unknown: try the stream, fall back on error
  }
}

let detecting = null;

function follow(card) {
  if (FINISHED.has(card.job.status)) {
    stopStream(card);
    return;
  }
  if (sse === "unknown") {
    detecting = detecting || detectEvents();
    detecting.then(() => {
      if (sse === "unknown") sse = "maybe";
      if (cards.get(card.job.id) === card) follow(card);
    });
    return;
  }
  if (sse !== "no" && !card.stream && (card.streamFailures || 0) < 2 && openStreams() < MAX_STREAMS) {
    openStream(card);
  } else if (!card.stream) {
    schedulePoll();
  }
}

function openStreams() {
  let count = 0;
  for (const card of cards.values()) if (card.stream) count++;
  return count;
}

function stopStream(card) {
  if (card.stream) {
    card.stream.abort();
    card.stream = null;
  }
}

async function openStream(card) {
  const id = card.job.id;
  const controller = new AbortController();
  card.stream = controller;
  let ended = false;
  let noRoute = false;
  let events = 0;
  try {
    const response = await authFetch(`/api/v1/jobs/${id}/events`, {
      headers: { Accept: "text/event-stream" },
      signal: controller.signal,
    });
    const type = response.headers.get("Content-Type") || "";
    if (!response.ok || !type.startsWith("text/event-stream")) {
      // 404/405: this server has no events route (or the job is gone: the
      // refresh below tells which).
      noRoute = response.status === 404 || response.status === 405 || response.ok;
      throw new Error(`no event stream (${response.status})`);
    }
    sse = "yes";
    await readEvents(response.body, (event) => {
      const data = event.data;
      if (!data || typeof data !== "object") return;
      const update = data.job && typeof data.job === "object" ? data.job : data;
      if (!update.status && update.progress === undefined) return;
      const current = cards.get(id);
      if (!current) return;
      events++;
      const before = current.job;
      current.job = { ...before, ...update, id };
      render(current, before);
      if (FINISHED.has(current.job.status)) {
        ended = true;
        controller.abort();
      }
    });
  } catch (error) {
    if (controller.signal.aborted && !ended) return; // stopped on purpose
  } finally {
    if (card.stream === controller) card.stream = null;
  }
  if (!ended && events === 0) card.streamFailures = (card.streamFailures || 0) + 1;
  // The stream ended: fetch the full job (its result, or why the stream closed).
  if (!cards.has(id)) return;
  const exists = await refresh(id);
  if (noRoute && exists) sse = "no";
  if (cards.has(id)) follow(cards.get(id));
}

function schedulePoll(delay = POLL_MS) {
  if (pollTimer !== null && delay === POLL_MS) return; // one is already due
  window.clearTimeout(pollTimer);
  pollTimer = window.setTimeout(poll, delay);
}

async function poll() {
  pollTimer = null;
  const due = Array.from(cards.values()).filter((card) => !card.stream && !FINISHED.has(card.job.status));
  if (!due.length) return;
  await Promise.all(due.map((card) => refresh(card.job.id)));
  if (Array.from(cards.values()).some((card) => !card.stream && !FINISHED.has(card.job.status))) {
    schedulePoll(document.hidden ? POLL_MS * 4 : POLL_MS);
  }
}

/** Fetches one job into its card; false when the job no longer exists. */
async function refresh(id) {
  try {
    const job = await api(`jobs/${id}`);
    if (cards.has(id)) upsert(job, { append: true });
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      if (cards.has(id)) announce("A job is gone: it was deleted or has expired.");
      removeCard(id);
      updateEmpty();
      return false;
    }
    return true;
  }
}

// ------------------------------------------------------------------ actions

async function cancel(id) {
  const card = cards.get(id);
  if (!card) return;
  try {
    const job = await api(`jobs/${id}/cancel`, { method: "POST" });
    upsert(job, { append: true });
  } catch (error) {
    announce(`Could not cancel: ${error.message}`);
    await refresh(id);
  }
}

async function remove(id) {
  const card = cards.get(id);
  if (!card) return;
  const what = card.el.querySelector(".job-title").textContent;
  if (!window.confirm(`Delete “${what}” and its files?`)) return;
  try {
    await api(`jobs/${id}`, { method: "DELETE" });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) {
      announce(`Could not delete: ${error.message}`);
      return;
    }
  }
  const next = card.el.nextElementSibling || card.el.previousElementSibling;
  removeCard(id);
  updateEmpty();
  announce(`Deleted ${what}.`);
  (next ? next.querySelector(".job-title") : $("#jobs-title")).focus?.();
}

function removeCard(id) {
  const card = cards.get(id);
  if (!card) return;
  stopStream(card);
  hideResults(card);
  card.el.remove();
  cards.delete(id);
  localFiles.delete(id);
}

/** Opens the results of a job as soon as it succeeds (jobs started here). */
export function openWhenDone(id) {
  const card = cards.get(id);
  if (!card) return;
  card.autoOpen = true;
  render(card, null);
}

function hideResults(card) {
  for (const undo of card.cleanup.splice(0)) undo();
  const region = card.el.querySelector(".results");
  region.replaceChildren();
  region.hidden = true;
  card.resultsShown = false;
  card.el.querySelector('[data-action="results"]').setAttribute("aria-expanded", "false");
  card.el.querySelector('[data-action="results"]').textContent = "Show results";
}

function toggleResults(id) {
  const card = cards.get(id);
  if (!card) return;
  if (card.resultsShown) {
    hideResults(card);
    return;
  }
  const region = card.el.querySelector(".results");
  region.hidden = false;
  card.resultsShown = true;
  const button = card.el.querySelector('[data-action="results"]');
  button.setAttribute("aria-expanded", "true");
  button.textContent = "Hide results";
  renderResults(card.job, region, {
    onCleanup: (undo) => card.cleanup.push(undo),
    localFile: localFile(id),
    regenerate: actions.regenerate,
  });
}
