// The "New job" form: task choice, drag-and-drop upload with a progress bar,
// each kind's main options, and field errors from the API shown in place.
// One file starts a job; several files (or a folder) start a batch with the
// same options (POST /api/v1/batches), followed in batches.js.

import { api, ApiError, upload } from "./api.js";
import { addBatch } from "./batches.js";
import { addJob, openWhenDone, rememberFile } from "./jobs.js";
import { $, $$, announce, formatBytes, h, kindLabel, serverKinds } from "./util.js";

const ENDPOINTS = {
  separation: "separations",
  transcription: "transcriptions",
  karaoke: "karaoke",
  analysis: "analyses",
  generation: "generations",
};
const GENERATION_FIELDS = [
  "prompt",
  "duration",
  "model",
  "guidance_scale",
  "temperature",
  "top_k",
  "top_p",
  "seed",
  "output_format",
  "bit_depth",
  "mp3_bitrate",
];
const NUMBERS = new Set(["duration", "guidance_scale", "temperature", "top_k", "top_p", "seed"]);

let models = [];
// What the server picks when a request names no model: {vocals_default: {model, how, reason, …}}.
let serverChoices = {};
let files = []; // the chosen File objects (one: a job; several: a batch)
let running = null; // the upload in flight: {abort}

const form = () => $("#job-form");

export function currentKind() {
  return form().elements.kind.value;
}

/** Offers only the kinds this server runs (a form for a kind it lacks stays hidden). */
async function offerServerKinds() {
  const offered = await serverKinds();
  if (!offered) return;
  const radios = Array.from(form().elements.kind);
  for (const radio of radios) radio.closest("label").hidden = !offered.includes(radio.value);
  const current = radios.find((radio) => radio.checked);
  if (current && current.closest("label").hidden) {
    const first = radios.find((radio) => !radio.closest("label").hidden);
    if (first) {
      first.checked = true;
      showKind(first.value);
    }
  }
}

export function initForm() {
  const f = form();
  for (const radio of f.elements.kind) radio.addEventListener("change", () => showKind(currentKind()));
  offerServerKinds();
  $("#gen-audio-role").addEventListener("change", () => showKind(currentKind()));
  $("#sep-model").addEventListener("change", updateSeparationModel);
  $("#sep-format").addEventListener("change", updateFormat);
  for (const select of $$("select[data-models]")) select.addEventListener("change", () => describeModel(select));

  const input = $("#file-input");
  input.addEventListener("change", () => chooseFiles(Array.from(input.files)));
  const folder = $("#folder-input");
  folder.addEventListener("change", () => {
    const audio = Array.from(folder.files).filter(looksLikeAudio);
    chooseFiles(audio);
    if (!audio.length && folder.files.length) {
      showError("No audio files in that folder.", { file: ["Choose a folder holding audio files."] });
    }
  });
  const zone = $("#dropzone");
  const over = (event) => {
    if (!event.dataTransfer || !Array.from(event.dataTransfer.types).includes("Files")) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    zone.classList.add("dragging");
  };
  zone.addEventListener("dragenter", over);
  zone.addEventListener("dragover", over);
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("dragging");
  });
  zone.addEventListener("drop", async (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const dropped = await droppedFiles(event.dataTransfer);
    if (!dropped.length) {
      if (event.dataTransfer.items && event.dataTransfer.items.length) {
        showError("No audio files in what was dropped.", { file: ["Drop audio files or a folder holding some."] });
      }
      return;
    }
    chooseFiles(dropped);
  });
  // A file dropped next to the zone must not make the browser leave the page.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  f.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  f.addEventListener("input", (event) => clearFieldError(event.target));
  $("#upload-cancel").addEventListener("click", () => running && running.abort());
  showKind(currentKind());
  updateFormat();
}

// What a folder's files are kept by: audio or video by type, or a known audio
// extension (a folder also holds cover art, playlists, notes…). Files chosen
// one by one are all sent: the server says why one is not audio.
const AUDIO_NAME = /\.(mp3|wav|wave|flac|ogg|oga|opus|m4a|aac|aif|aiff|wma|webm|mka|mp4|alac|ape|wv)$/i;

function looksLikeAudio(chosen) {
  return /^(audio|video)\//.test(chosen.type || "") || AUDIO_NAME.test(chosen.name);
}

/**
 * The files of a drop: a dropped folder is walked (DataTransferItem.
 * webkitGetAsEntry) and its audio files kept, in path order; dropped files
 * are kept as they are.
 */
async function droppedFiles(transfer) {
  const items = Array.from(transfer.items || []).filter((item) => item.kind === "file");
  // Read before the first await: a drop's items are emptied once its handler returns.
  const entries = items.map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
  const plain = items.map((item) => item.getAsFile());
  if (!entries.some((entry) => entry && entry.isDirectory)) {
    try {
      $("#file-input").files = transfer.files; // the picker names what was dropped
    } catch {
      // older browsers: the files are kept all the same
    }
    return Array.from(transfer.files || []);
  }
  const found = [];
  for (const [index, entry] of entries.entries()) {
    if (entry && entry.isDirectory) found.push(...(await folderFiles(entry)));
    else found.push(plain[index]);
  }
  return found.filter(Boolean);
}

function entryFile(entry) {
  return new Promise((resolve) => entry.file(resolve, () => resolve(null)));
}

async function folderFiles(directory) {
  const reader = directory.createReader();
  const entries = [];
  // readEntries answers a part of the folder at a time, then an empty list.
  for (;;) {
    const part = await new Promise((resolve, reject) => reader.readEntries(resolve, reject)).catch(() => []);
    if (!part.length) break;
    entries.push(...part);
  }
  entries.sort((a, b) => a.fullPath.localeCompare(b.fullPath));
  const found = [];
  for (const entry of entries) {
    if (entry.isDirectory) found.push(...(await folderFiles(entry)));
    else if (AUDIO_NAME.test(entry.name)) found.push(await entryFile(entry));
  }
  return found.filter((chosen) => chosen && looksLikeAudio(chosen));
}

function chooseFiles(chosen) {
  files = chosen.filter(Boolean);
  const bytes = files.reduce((sum, f) => sum + f.size, 0);
  let text = "";
  if (files.length === 1) text = `Chosen: ${files[0].name} (${formatBytes(files[0].size)})`;
  else if (files.length > 1) {
    const names = files.slice(0, 5).map((f) => f.name).join(", ");
    const more = files.length > 5 ? ` and ${files.length - 5} more` : "";
    text = `Chosen: ${files.length} files (${formatBytes(bytes)}): ${names}${more}. They start as one batch.`;
  }
  $("#file-chosen").textContent = text;
  $("#dropzone").classList.toggle("has-file", files.length > 0);
  clearFieldError($("#file-input"));
}

/** Shows the options of ``kind``; hidden groups are disabled so they are not sent. */
function showKind(kind) {
  for (const group of $$("fieldset.options")) {
    const active = group.dataset.kind === kind;
    group.hidden = !active;
    group.disabled = !active;
  }
  const role = $("#gen-audio-role").value;
  const needsFile = kind !== "generation" || Boolean(role);
  $("#file-area").hidden = !needsFile;
  $("#file-label").textContent =
    kind === "generation" ? (role === "melody" ? "Melody audio file" : "Audio to continue") : "Audio files";
  // A generation takes one audio prompt; the other kinds take a batch.
  $("#file-input").multiple = kind !== "generation";
  for (const hint of $$("[data-batch-hint]")) hint.hidden = kind === "generation";
  const label = { separation: "Separate", transcription: "Transcribe", karaoke: "Make karaoke", analysis: "Analyse", generation: "Generate" };
  $("#submit-job").textContent = label[kind] || "Start";
  clearErrors();
}

/** Fills the model pickers from GET /api/v1/models. */
export async function loadModels() {
  try {
    const body = await api("/api/v1/models");
    models = body.models || [];
    serverChoices = { vocals_default: body.vocals_default || null };
  } catch (error) {
    announce(`Could not load the model list: ${error.message}`);
    return;
  }
  for (const select of $$("select[data-models]")) {
    const kind = select.dataset.models;
    const needs = select.dataset.needsStem;
    const previous = select.value;
    select.replaceChildren();
    let chosen = null;
    const fits = models.filter((m) => m.kind === kind && (!needs || (m.stems || []).includes(needs)));
    // A select whose field the server fills in when it is left out (karaoke's
    // separation model) starts on "Server's choice": the empty value is not sent.
    const pick = select.dataset.serverChoice ? serverChoices[select.dataset.serverChoice] : null;
    if (pick) select.append(h("option", { value: "" }, `Server's choice (${pick.model})`));
    for (const model of fits) {
      const usable = model.available || model.downloadable;
      const notes = [];
      if (model.default) notes.push("default");
      if (!model.available) notes.push(model.downloadable ? "downloads on first use" : "not available");
      const option = h("option", { value: model.name, disabled: !usable }, notes.length ? `${model.name} (${notes.join(", ")})` : model.name);
      select.append(option);
      if (model.name === previous && usable) chosen = model.name;
    }
    // Default: the server's choice where it makes one, else the kind's default
    // when it can run here, else the first ready model.
    const ready = fits.find((m) => m.default && m.available) || fits.find((m) => m.available) || fits.find((m) => m.default);
    select.value = chosen || (pick ? "" : ready ? ready.name : select.value);
    describeModel(select);
  }
  for (const hint of $$("[data-server-choice-of]")) {
    const pick = serverChoices[hint.dataset.serverChoiceOf];
    hint.textContent = pick ? `Vocals separated by ${pick.model}, the server's choice.` : "";
  }
  updateSeparationModel();
}

function modelEntry(kind, name) {
  return models.find((m) => m.kind === kind && m.name === name) || null;
}

function describeModel(select) {
  const hint = $(`[data-describes="${select.id}"]`);
  if (!hint) return;
  const pick = select.value === "" && select.dataset.serverChoice ? serverChoices[select.dataset.serverChoice] : null;
  const entry = modelEntry(select.dataset.models, pick ? pick.model : select.value);
  hint.replaceChildren();
  if (pick) {
    // Why the server picks this model: the best vocals model it can run, or a fallback.
    hint.append(h("span", { class: "model-fact", "data-fact": "choice" }, `Server's choice: ${pick.model}. ${capitalise(pick.reason)}.`));
  }
  if (!entry) return;
  hint.append(h("span", { class: "model-fact", "data-fact": "description" }, entry.description || ""));
  for (const [fact, ...content] of modelFacts(entry)) {
    hint.append(h("span", { class: "model-fact", "data-fact": fact }, ...content));
  }
}

function capitalise(text) {
  return text ? text.charAt(0).toUpperCase() + text.slice(1) : text;
}

/** A link to where a figure or licence is stated (shown as its host). */
function sourceLink(url) {
  let label = url;
  try {
    const parsed = new URL(url);
    label = parsed.host + parsed.pathname.split("/").slice(0, 3).join("/");
  } catch {
    return url;
  }
  return h("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, label);
}

/**
 * What helps choose a model, from its catalogue entry: stems and rate, the
 * published SDR per benchmark with its source, the weights' licence and the
 * speed measured on the project's machine. ``[fact, ...content]`` per line.
 */
function modelFacts(entry) {
  const facts = [];
  if (entry.kind === "separation") {
    const rate = entry.sample_rate ? `${entry.sample_rate / 1000} kHz` : entry.sample_rate_note || "rate unknown";
    facts.push(["stems", `Stems: ${(entry.stems || []).join(", ") || "known once loaded"} · ${rate}`]);
    if (entry.quality && entry.quality.length) {
      const byBenchmark = new Map();
      for (const q of entry.quality) {
        const key = `${q.benchmark}\u0000${q.source}`;
        if (!byBenchmark.has(key)) byBenchmark.set(key, { benchmark: q.benchmark, source: q.source, figures: [] });
        byBenchmark.get(key).figures.push(`${q.stem} ${q.sdr_db.toFixed(2)} dB`);
      }
      for (const { benchmark, source, figures } of byBenchmark.values()) {
        facts.push(["quality", `Published SDR on ${benchmark}: ${figures.join(", ")} (`, sourceLink(source), ")"]);
      }
    } else {
      facts.push(["quality", "Published SDR: none for these weights"]);
    }
  }
  if (entry.license) {
    const licence = ["license", `Weights licence: ${entry.license}`];
    if (entry.license_source) licence.push(" (", sourceLink(entry.license_source), ")");
    facts.push(licence);
  }
  if (entry.speed) {
    facts.push(["speed", `Speed here: ${entry.speed.real_time_factor} s per second of audio (${entry.speed.measured})`]);
  } else if (entry.kind === "separation") {
    facts.push(["speed", "Speed here: not measured"]);
  }
  return facts;
}

function updateSeparationModel() {
  const entry = modelEntry("separation", $("#sep-model").value);
  showEnsembleChoices(entry);
  updateStemChoices();
  showModelOptions(entry);
}

/** The two-stems choices: the stems of the chosen model, or those every combined model gives. */
function updateStemChoices() {
  const entry = modelEntry("separation", $("#sep-model").value);
  const select = $("#sep-two-stems");
  const previous = select.value;
  let stems = (entry && entry.stems) || [];
  for (const name of combinedModels()) stems = commonStems(stems, (modelEntry("separation", name) || {}).stems || []);
  select.replaceChildren(h("option", { value: "" }, "All stems of the model"));
  for (const stem of stems) select.append(h("option", { value: stem }, `${stem} + everything else`));
  select.value = Array.from(select.options).some((o) => o.value === previous) ? previous : "";
}

// An ensemble has at most this many models (app/models/ensemble_engine.py's MAX_MEMBERS).
const MAX_ENSEMBLE = 4;

/** What a model offers to an ensemble: its stems, and an instrumental (the mix minus its vocals) where it has vocals only. */
function offeredStems(stems) {
  return stems.includes("vocals") && !stems.includes("instrumental") ? [...stems, "instrumental"] : stems;
}

function commonStems(a, b) {
  const other = offeredStems(b);
  return offeredStems(a).filter((stem) => other.includes(stem));
}

function combinedModels() {
  return $$("#sep-ensemble-models input:checked").map((box) => box.value);
}

/**
 * The models that can be combined with the chosen one: those sharing a stem
 * with it, not ensembles themselves. Ticked ones are sent as more ``model``
 * fields, which the server runs as one ensemble.
 */
function showEnsembleChoices(entry) {
  const box = $("#sep-ensemble-models");
  const ticked = new Set(combinedModels());
  box.replaceChildren();
  const section = $("#sep-ensemble");
  // A preset is an ensemble already; hpss-like models with no stem in common get nothing.
  section.hidden = !entry || Boolean(entry.members);
  const partners = !entry || entry.members ? [] : models.filter((m) =>
    m.kind === "separation" && m.name !== entry.name && !m.members && (m.available || m.downloadable) &&
    commonStems(entry.stems || [], m.stems || []).length > 0);
  for (const partner of partners) {
    const id = `sep-ensemble-${partner.name}`;
    const input = h("input", { type: "checkbox", name: "model", value: partner.name, id });
    input.checked = ticked.has(partner.name);
    const note = partner.available ? "" : " (downloads on first use)";
    box.append(h("div", { class: "field check" }, h("label", { for: id }, input, ` ${partner.name}${note}`)));
    input.addEventListener("change", updateEnsemble);
  }
  $("#sep-ensemble-none").hidden = partners.length > 0;
  const algorithm = $("#sep-ensemble-algorithm");
  if (!algorithm.options.length) {
    const preset = models.find((m) => m.members);
    const option = preset && (preset.options || []).find((o) => o.name === "ensemble_algorithm");
    for (const choice of (option && option.choices) || ["avg_wave"]) algorithm.append(h("option", { value: choice }, choice));
    algorithm.value = (preset && preset.algorithm) || algorithm.options[0].value;
  }
  updateEnsemble();
}

function updateEnsemble() {
  const chosen = combinedModels();
  // The algorithm is sent only with an ensemble; the full list takes no more ticks.
  $("#sep-ensemble-algorithm").disabled = chosen.length === 0;
  for (const box of $$("#sep-ensemble-models input")) box.disabled = !box.checked && chosen.length >= MAX_ENSEMBLE - 1;
  $("summary", $("#sep-ensemble")).textContent = chosen.length
    ? `Combine models (ensemble of ${chosen.length + 1})`
    : "Combine models (ensemble)";
  updateStemChoices();
}

/**
 * Builds the "Quality" inputs from the options the chosen model takes (its
 * entry in GET /api/v1/models): the page knows no engine by name, so a model
 * family added on the server shows its own options here. Values typed for an
 * option the next model also takes are kept.
 */
function showModelOptions(entry) {
  const box = $("#sep-options");
  const kept = {};
  for (const input of $$("input, select", box)) kept[input.name] = input.value;
  box.replaceChildren();
  const options = (entry && entry.options) || [];
  for (const option of options) box.append(optionField(option, kept[option.name]));
  $("#sep-no-options").hidden = options.length > 0 || !entry;
  $("summary", $("#sep-advanced")).textContent = entry && options.length ? `Quality (${entry.name} options)` : "Quality";
}

function optionLabel(option) {
  const words = option.name.replace(/_/g, " ");
  const label = words.charAt(0).toUpperCase() + words.slice(1);
  return option.unit ? `${label} (${option.unit})` : label;
}

function optionField(option, kept) {
  const id = `sep-opt-${option.name.replace(/_/g, "-")}`;
  const hint = h("small", { id: `${id}-hint`, class: "hint", text: option.description || "" });
  const described = option.description ? hint.id : null;
  const fallback = option.default === null || option.default === undefined ? "auto" : option.default;
  let control;
  if (option.type === "boolean" || option.choices) {
    // A select, not a checkbox: an unticked box is not sent at all, so an
    // option that defaults to true could never be turned off.
    const choices = option.type === "boolean" ? [["true", "Yes"], ["false", "No"]] : option.choices.map((c) => [c, c]);
    const shown = option.type === "boolean" && typeof option.default === "boolean" ? (option.default ? "Yes" : "No") : fallback;
    control = h(
      "select",
      { id, name: option.name, "aria-describedby": described },
      h("option", { value: "" }, `Default (${shown})`),
      choices.map(([value, label]) => h("option", { value }, label)),
    );
  } else if (option.type === "integer" || option.type === "number") {
    control = h("input", {
      id,
      name: option.name,
      type: "number",
      step: option.type === "integer" ? "1" : "any",
      inputmode: option.type === "integer" ? "numeric" : "decimal",
      placeholder: String(fallback),
      "aria-describedby": described,
    });
    if (option.minimum !== null && option.minimum !== undefined) control.min = String(option.minimum);
    if (option.maximum !== null && option.maximum !== undefined) control.max = String(option.maximum);
  } else {
    control = h("input", { id, name: option.name, type: "text", "aria-describedby": described });
  }
  if (kept !== undefined) control.value = kept;
  return h("div", { class: "field", "data-option": option.name }, h("label", { for: id }, optionLabel(option)), control, hint);
}

function updateFormat() {
  const format = $("#sep-format").value;
  for (const field of $$('[data-format-of="sep"]')) {
    const show = field.dataset.showForFormat.split(" ").includes(format);
    field.hidden = !show;
    for (const control of $$("select, input", field)) control.disabled = !show;
  }
  const depth = $("#sep-bit-depth");
  for (const option of depth.options) option.disabled = option.dataset.onlyFormat ? option.dataset.onlyFormat !== format : false;
  if (depth.selectedOptions[0] && depth.selectedOptions[0].disabled) depth.value = "16";
}

// ------------------------------------------------------------------ errors

function clearErrors() {
  const box = $("#form-error");
  box.hidden = true;
  box.replaceChildren();
  for (const el of $$("[aria-invalid]", form())) clearFieldError(el);
}

function clearFieldError(el) {
  if (!el || !el.hasAttribute || !el.hasAttribute("aria-invalid")) return;
  el.removeAttribute("aria-invalid");
  const note = document.getElementById(`${el.id}-error`);
  if (note) note.remove();
  const box = $("#form-error");
  if (box.dataset.fields && !form().querySelector("[aria-invalid]")) {
    // Every field the server refused has been edited: the summary is stale.
    box.hidden = true;
    delete box.dataset.fields;
  }
  const described = (el.getAttribute("aria-describedby") || "").split(" ").filter((id) => id && id !== `${el.id}-error`);
  if (described.length) el.setAttribute("aria-describedby", described.join(" "));
  else el.removeAttribute("aria-describedby");
}

function fieldFor(name) {
  const kind = currentKind();
  if (name === "file" || name === "melody" || name === "continuation") return $("#file-input");
  if (name === "url" || name === "melody_url" || name === "continuation_url") return $("#url-input");
  const group = $(`fieldset.options[data-kind="${kind}"]`);
  return group ? group.querySelector(`[name="${name}"]`) : null;
}

function showError(message, fields) {
  const box = $("#form-error");
  box.replaceChildren(h("p", { text: message }));
  const unplaced = [];
  let first = null;
  for (const [name, messages] of Object.entries(fields || {})) {
    const text = Array.isArray(messages) ? messages.join(" ") : typeof messages === "string" ? messages : JSON.stringify(messages);
    const el = fieldFor(name);
    if (el && el.id) {
      el.setAttribute("aria-invalid", "true");
      const note = h("small", { id: `${el.id}-error`, class: "field-error", text });
      el.insertAdjacentElement("afterend", note);
      const described = (el.getAttribute("aria-describedby") || "").split(" ").filter(Boolean);
      el.setAttribute("aria-describedby", [...described, note.id].join(" "));
      first = first || el;
      if (el.closest("details")) el.closest("details").open = true;
    } else {
      unplaced.push(`${name}: ${text}`);
    }
  }
  if (unplaced.length) box.append(h("ul", {}, unplaced.map((text) => h("li", { text }))));
  if (first && !unplaced.length) box.dataset.fields = "1";
  else delete box.dataset.fields;
  box.hidden = false;
  (first || box).focus?.();
}

// ------------------------------------------------------------------ submit

/** The form's fields by name; a name given more than once (an ensemble's ``model``) holds a list. */
function formFields() {
  const data = new FormData(form());
  const fields = {};
  for (const [name, value] of data.entries()) {
    if (name === "kind" || name === "file" || name === "url" || name === "audio_role") continue;
    if (typeof value === "string" && value.trim() === "") continue;
    const given = typeof value === "string" ? value.trim() : value;
    if (name in fields) fields[name] = [].concat(fields[name], given);
    else fields[name] = given;
  }
  return fields;
}

/** Adds every field to a multipart body, a list as the field repeated. */
function appendFields(body, fields) {
  for (const [name, value] of Object.entries(fields)) {
    for (const each of [].concat(value)) body.append(name, each);
  }
}

async function submit() {
  if (running) return;
  clearErrors();
  const kind = currentKind();
  const fields = formFields();
  const role = kind === "generation" ? $("#gen-audio-role").value : "";
  if (kind === "generation" && !fields.prompt) {
    showError("Describe the music to generate.", { prompt: ["Required."] });
    return;
  }
  const takesAudio = kind !== "generation" || Boolean(role);
  const urls = takesAudio ? chosenUrls() : [];
  const inputs = files.length + urls.length;
  if (takesAudio && !inputs) {
    showError("Choose an audio file first (drop it on the box or use the file picker), or give its address.", { file: ["Required."] });
    return;
  }
  if (kind === "generation" && role && inputs > 1) {
    showError("A generation follows one audio file: choose only one file or one address.", { file: ["One file or address."] });
    return;
  }
  if (kind === "generation" && (!role || !files.length)) {
    // JSON: no file to send; an audio prompt by address goes as melody_url or continuation_url.
    const json = generationJson(fields);
    if (role) json[`${role}_url`] = urls[0];
    await start(kind, () => ({ promise: api("generations", { method: "POST", json }), abort() {} }), []);
    return;
  }
  const body = new FormData();
  if (inputs > 1) {
    // One request for them all: the kind, its options once, a `file` part or a `url` each.
    body.append("kind", kind);
    appendFields(body, fields);
    for (const each of files) body.append("file", each, each.name);
    for (const address of urls) body.append("url", address);
    await start(kind, (progress) => upload("batches", body, progress), files, inputs);
    return;
  }
  appendFields(body, fields);
  if (urls.length) {
    body.append("url", urls[0]);
    await start(kind, (progress) => upload(ENDPOINTS[kind], body, progress), []);
    return;
  }
  const file = files[0];
  body.append(role || "file", file, file.name);
  await start(kind, (progress) => upload(ENDPOINTS[kind], body, progress), [file]);
}

/** The addresses typed in the URL box: one per line (or separated by spaces). */
function chosenUrls() {
  return $("#url-input").value.split(/\s+/).map((each) => each.trim()).filter(Boolean);
}

function generationJson(fields) {
  const json = {};
  for (const name of GENERATION_FIELDS) {
    if (fields[name] === undefined) continue;
    json[name] = NUMBERS.has(name) ? Number(fields[name]) : fields[name];
  }
  return json;
}

/** Sends the request ``send(onProgress)`` makes; ``sent`` are the files it uploads (none for a
 * generation or an address), ``inputs`` how many songs it starts (files and addresses). */
async function start(kind, send, sent, inputs = sent.length) {
  const button = $("#submit-job");
  const box = $("#upload");
  const bar = $("#upload-progress");
  const label = $("#upload-label");
  const batch = inputs > 1;
  const what = !sent.length ? "" : sent.length > 1 ? `${sent.length} files` : sent[0].name;
  button.disabled = true;
  bar.value = 0;
  box.hidden = !sent.length;
  label.textContent = sent.length ? `Uploading ${what}: 0%` : "";
  let lastAnnounced = -1;
  const request = send((fraction) => {
    const percent = Math.round(fraction * 100);
    bar.value = percent;
    label.textContent = percent < 100 ? `Uploading ${what}: ${percent}%` : `Uploaded ${what}; checking the audio…`;
    if (percent - lastAnnounced >= 25 || percent === 100) {
      lastAnnounced = percent;
      if (percent < 100) announce(`Uploading: ${percent}%`);
    }
  });
  running = request;
  try {
    const answer = await request.promise;
    if (batch) {
      addBatch(answer);
    } else {
      rememberFile(answer.id, sent.length ? sent[0] : null);
      addJob(answer);
      openWhenDone(answer.id);
      announce(`${kindLabel(kind)} started.`);
    }
  } catch (error) {
    if (error instanceof ApiError && error.code === "aborted") announce("Upload stopped.");
    else showError(requestError(error, batch), error.errors);
  } finally {
    running = null;
    button.disabled = false;
    box.hidden = true;
  }
}

/** The message for a refused request: a batch over the server's limits says what to do. */
function requestError(error, batch) {
  if (!batch || !(error instanceof ApiError)) return error.message;
  if (error.status === 413) return `${error.message} Send fewer or smaller files at a time.`;
  if (error.status === 0 && error.code === "network") {
    // A server refusing a too large body may close the connection before answering.
    return `${error.message} If the files are large, the batch may be over the server's size limit: send fewer at a time.`;
  }
  return error.message;
}

/** Re-runs a generation with its seed, or loads its settings into the form. */
export async function regenerate(job, { edit }) {
  const params = { ...(job.params || {}) };
  const used = (job.result && job.result.parameters) || {};
  if (used.seed !== undefined) params.seed = used.seed;
  const needsAudio = Boolean(params.input_role);
  if (edit || needsAudio) {
    const f = form();
    $('input[name="kind"][value="generation"]', f).checked = true;
    for (const name of GENERATION_FIELDS) {
      const el = $(`fieldset[data-kind="generation"] [name="${name}"]`, f);
      if (el && params[name] !== undefined) el.value = String(params[name]);
    }
    $("#gen-audio-role").value = params.input_role || "";
    showKind("generation");
    $("#new-job").scrollIntoView({ block: "start" });
    $("#gen-prompt").focus();
    announce(needsAudio ? "Settings loaded: choose the audio prompt file again, then Generate." : "Settings loaded into the form.");
    return;
  }
  try {
    const created = await api("generations", { method: "POST", json: generationJson(params) });
    addJob(created);
    openWhenDone(created.id);
    announce(`Generating again with seed ${params.seed}.`);
  } catch (error) {
    announce(`Could not start the generation: ${error.message}`);
  }
}
