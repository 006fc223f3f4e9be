// Batches: many songs sent at once with one set of options (POST /api/v1/batches).
// One card per batch: overall progress and counts, a row per song (status,
// progress, why it failed), cancel-all, delete and one "Download all (zip)".
// Followed over GET /api/v1/batches/{id}/events (read with fetch(): EventSource
// cannot send the token), and by polling GET /api/v1/batches/{id} when the
// stream is missing or breaks.

import { api, ApiError, authFetch, fetchFile } from "./api.js";
import { loadJobs } from "./jobs.js";
import { readEvents } from "./sse.js";
import { $, announce, FINISHED, h, kindLabel, saveBlob, STATUS_LABELS } from "./util.js";

const POLL_MS = 2000;
// One batch stream at a time (the job list keeps three of the browser's six
// connections per host); other running batches are polled.
const MAX_STREAMS = 1;
const LISTED = 5; // the newest batches shown after logging in
// The batch document lists 100 jobs a page (its stream sends the first page):
// the rest are fetched a page at a time, this often while the batch runs.
const MORE_PAGES_MS = 5000;

const BATCH_LABELS = {
  queued: "Queued",
  running: "Running",
  succeeded: "Done",
  completed_with_errors: "Done with errors",
  failed: "Failed",
  canceled: "Canceled",
  expired: "Expired",
};
const BATCH_FINAL = new Set(["succeeded", "completed_with_errors", "failed", "canceled", "expired"]);

const cards = new Map(); // batch id -> {batch, el, rows: Map(job id -> row), stream, timer, failures}

const list = () => $("#batch-list");

export function initBatches() {
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return;
    for (const card of cards.values()) if (!card.stream && !isFinal(card.batch)) poll(card, 0);
  });
}

/** Forgets every card (on logout). */
export function clearBatches() {
  for (const id of Array.from(cards.keys())) removeCard(id);
  updateSection();
}

/** The newest few batches, each with its songs (after logging in). */
export async function loadBatches() {
  let body;
  try {
    body = await api(`batches?per_page=${LISTED}`);
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) {
      announce(`Could not load your batches: ${error.message}`);
    }
    return;
  }
  for (const listed of body.items.slice().reverse()) {
    if (cards.has(listed.id)) continue;
    try {
      addBatch(await api(`batches/${listed.id}`), { announceIt: false });
    } catch {
      // deleted meanwhile
    }
  }
}

/** Shows a batch (just created, or listed) at the top and follows it until it ends. */
export function addBatch(batch, { announceIt = true } = {}) {
  let card = cards.get(batch.id);
  if (!card) {
    card = build(batch);
    cards.set(batch.id, card);
    list().prepend(card.el);
  }
  update(card, batch);
  updateSection();
  if (announceIt) {
    card.el.querySelector(".batch-title").focus?.();
    announce(`${kindLabel(batch.kind)} of ${batch.inputs} files started.`);
    loadJobs(); // the batch's jobs are jobs too: each card has its song's results
  }
  if (batch.jobs_total > batch.jobs.length) morePages(card);
  follow(card);
  return card;
}

function updateSection() {
  $("#batches").hidden = cards.size === 0;
}

function isFinal(batch) {
  return BATCH_FINAL.has(batch.status);
}

function build(batch) {
  const fragment = $("#batch-template").content.cloneNode(true);
  const el = fragment.querySelector(".batch");
  el.dataset.batchId = batch.id;
  const title = el.querySelector(".batch-title");
  title.id = `batch-${batch.id}-title`;
  title.tabIndex = -1;
  el.querySelector("article").setAttribute("aria-labelledby", title.id);
  el.querySelector(".batch-progress progress").setAttribute("aria-labelledby", title.id);
  const card = { batch, el, rows: new Map(), stream: null, timer: null, pages: null, failures: 0 };
  el.querySelector('[data-action="cancel-batch"]').addEventListener("click", () => cancel(card));
  el.querySelector('[data-action="delete-batch"]').addEventListener("click", () => remove(card));
  el.querySelector('[data-action="archive"]').addEventListener("click", (event) => download(card, event.currentTarget));
  return card;
}

function countsText(batch) {
  const c = batch.counts || {};
  const ended = (c.succeeded || 0) + (c.failed || 0) + (c.canceled || 0) + (c.expired || 0);
  const parts = [`${ended} of ${batch.jobs_total || batch.inputs} ended`];
  for (const name of ["succeeded", "failed", "canceled", "running", "queued", "expired"]) {
    if (c[name]) parts.push(`${c[name]} ${(STATUS_LABELS[name] || name).toLowerCase()}`);
  }
  return parts.join(" · ");
}

/** Renders ``batch`` (a batch document) into its card; its ``jobs`` update their rows. */
function update(card, batch) {
  const before = card.batch;
  card.batch = { ...before, ...batch, jobs: batch.jobs || before.jobs };
  const b = card.batch;
  const { el } = card;
  el.dataset.status = b.status;
  el.querySelector(".batch-title").textContent = `${kindLabel(b.kind)}: ${b.inputs} ${b.inputs === 1 ? "file" : "files"}`;
  const badge = el.querySelector(".badge");
  badge.textContent = BATCH_LABELS[b.status] || b.status;
  badge.dataset.status = b.status;
  const percent = Math.round((b.progress || 0) * 100);
  const bar = el.querySelector(".batch-progress progress");
  bar.value = percent;
  bar.setAttribute("aria-valuetext", `${percent}%`);
  el.querySelector(".batch-counts").textContent = `${percent}% · ${countsText(b)}`;
  const active = !isFinal(b);
  el.querySelector('[data-action="cancel-batch"]').hidden = !active;
  el.querySelector('[data-action="archive"]').hidden = !((b.counts && b.counts.succeeded) > 0);
  for (const job of batch.jobs || []) row(card, job);
  if (before.status && before.status !== b.status) {
    announce(`Batch of ${b.inputs} files: ${BATCH_LABELS[b.status] || b.status}.`);
  }
}

/** One song's row: its file name, status, progress while it runs, and why it failed. */
function row(card, job) {
  let entry = card.rows.get(job.id);
  if (!entry) {
    const name = h("span", { class: "song-name", text: job.filename || "input" });
    const badge = h("span", { class: "badge" });
    const bar = h("progress", { max: 100, value: 0, "aria-label": `Progress of ${job.filename || "input"}` });
    const error = h("p", { class: "error song-error", hidden: true });
    const el = h("li", { class: "song", "data-job-id": job.id }, h("div", { class: "song-head" }, name, badge), bar, error);
    entry = { el, badge, bar, error };
    card.rows.set(job.id, entry);
    card.el.querySelector(".song-list").append(el);
  }
  entry.el.dataset.status = job.status;
  entry.badge.textContent = STATUS_LABELS[job.status] || job.status;
  entry.badge.dataset.status = job.status;
  const percent = Math.round((job.status === "succeeded" ? 1 : job.progress || 0) * 100);
  entry.bar.value = percent;
  entry.bar.hidden = FINISHED.has(job.status) || job.status === "expired";
  entry.error.hidden = !job.error;
  entry.error.textContent = job.error ? `${job.error.message} (${job.error.code})` : "";
}

// ------------------------------------------------------------------ live updates

function follow(card) {
  window.clearTimeout(card.timer);
  card.timer = null;
  if (isFinal(card.batch)) {
    stopStream(card);
    return;
  }
  if (!card.stream && card.failures < 2 && openStreams() < MAX_STREAMS) openStream(card);
  else if (!card.stream) poll(card);
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
  const id = card.batch.id;
  const controller = new AbortController();
  card.stream = controller;
  let events = 0;
  try {
    const response = await authFetch(`/api/v1/batches/${id}/events`, {
      headers: { Accept: "text/event-stream" },
      signal: controller.signal,
    });
    const type = response.headers.get("Content-Type") || "";
    if (!response.ok || !type.startsWith("text/event-stream")) throw new Error(`no event stream (${response.status})`);
    await readEvents(response.body, (event) => {
      const data = event.data;
      if (!data || typeof data !== "object" || !data.status || cards.get(id) !== card) return;
      events++;
      update(card, data);
      if (isFinal(card.batch)) controller.abort();
    });
  } catch {
    if (controller.signal.aborted && !isFinal(card.batch)) return; // stopped on purpose
  } finally {
    if (card.stream === controller) card.stream = null;
  }
  if (events === 0) card.failures++;
  if (cards.get(id) !== card) return;
  // The stream ended: read the whole batch (every page of songs), then go on if it has not ended.
  if (await refresh(card)) follow(card);
}

function poll(card, delay = POLL_MS) {
  window.clearTimeout(card.timer);
  card.timer = window.setTimeout(
    async () => {
      card.timer = null;
      if (!(await refresh(card)) || isFinal(card.batch) || card.stream) return;
      if (card.failures < 2 && openStreams() < MAX_STREAMS) openStream(card);
      else poll(card, document.hidden ? POLL_MS * 4 : POLL_MS);
    },
    delay,
  );
}

/** Fetches the batch into its card, every page of its songs; false when it is gone. */
async function refresh(card) {
  const id = card.batch.id;
  try {
    const batch = await api(`batches/${id}`);
    if (cards.get(id) !== card) return false;
    update(card, batch);
    if (batch.jobs_total > batch.jobs.length) await fetchPages(card);
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      announce("A batch is gone: it was deleted or has expired.");
      removeCard(id);
      updateSection();
      return false;
    }
    return true;
  }
}

async function fetchPages(card) {
  const { id, per_page: perPage } = card.batch;
  const size = perPage || 100;
  const pages = Math.ceil((card.batch.jobs_total || 0) / size);
  for (let page = 2; page <= pages; page++) {
    const body = await api(`batches/${id}?page=${page}&per_page=${size}`);
    if (cards.get(id) !== card) return;
    for (const job of body.jobs || []) row(card, job);
  }
}

/** Songs past the stream's first page: read now, and again every few seconds until the batch ends. */
function morePages(card) {
  if (card.pages) return;
  const step = async () => {
    if (cards.get(card.batch.id) !== card) return;
    try {
      await fetchPages(card);
    } catch {
      // the next step tries again
    }
    card.pages = isFinal(card.batch) ? null : window.setTimeout(step, MORE_PAGES_MS);
  };
  card.pages = window.setTimeout(step, 0);
}

// ------------------------------------------------------------------ actions

async function cancel(card) {
  try {
    update(card, await api(`batches/${card.batch.id}/cancel`, { method: "POST" }));
    announce("Batch canceled.");
  } catch (error) {
    announce(`Could not cancel the batch: ${error.message}`);
  }
  await refresh(card);
}

async function remove(card) {
  const what = card.el.querySelector(".batch-title").textContent;
  if (!window.confirm(`Delete the batch “${what}”, all its jobs and their files?`)) return;
  try {
    await api(`batches/${card.batch.id}`, { method: "DELETE" });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) {
      announce(`Could not delete the batch: ${error.message}`);
      return;
    }
  }
  removeCard(card.batch.id);
  updateSection();
  loadJobs(); // its jobs went with it
  announce(`Deleted the batch ${what}.`);
  $("#jobs-title").focus?.();
}

async function download(card, button) {
  button.disabled = true;
  const label = button.textContent;
  button.textContent = "Preparing the zip…";
  try {
    const { blob, filename } = await fetchFile(card.batch.archive_url);
    saveBlob(blob, filename || `batch-${card.batch.id.slice(0, 8)}.zip`);
  } catch (error) {
    announce(`Could not download the batch: ${error.message}`);
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

function removeCard(id) {
  const card = cards.get(id);
  if (!card) return;
  stopStream(card);
  window.clearTimeout(card.timer);
  window.clearTimeout(card.pages);
  card.el.remove();
  cards.delete(id);
}
