// A succeeded job's results: players with waveforms, downloads, transcripts
// that follow the audio, analysis figures and generation parameters.
//
// Result files need the Bearer token, so they are fetched as blobs and played
// or saved from object URLs (the page's CSP allows blob: for media only).

import { fetchFile } from "./api.js";
import { drawWaveform, peaksOf } from "./waveform.js";
import { $, announce, formatBytes, formatSeconds, h, saveBlob } from "./util.js";

const TRANSCRIPT_FORMATS = [
  ["txt", "Text"],
  ["srt", "SRT"],
  ["vtt", "WebVTT"],
  ["lrc", "LRC"],
  ["json", "JSON"],
];

/** Fills ``region`` with the results of ``job``; ``ctx.onCleanup(fn)`` registers undo steps. */
export function renderResults(job, region, ctx) {
  const result = job.result || {};
  const files = result.files || [];
  const audioFiles = files.filter((f) => (f.content_type || "").startsWith("audio/"));
  const otherFiles = files.filter((f) => !(f.content_type || "").startsWith("audio/"));
  const players = [];

  region.replaceChildren();
  region.setAttribute("aria-label", "Results");

  if (audioFiles.length) {
    const grid = h("div", { class: "stems" });
    region.append(grid);
    for (const file of audioFiles) players.push(stemPlayer(file, grid, ctx));
  }

  const downloads = h("div", { class: "downloads" });
  if (files.length > 1 && result.archive_url) {
    downloads.append(
      downloadButton(`Download all (zip, ${formatBytes(files.reduce((n, f) => n + (f.size || 0), 0))})`, result.archive_url, "archive"),
    );
  }
  for (const file of otherFiles) downloads.append(downloadButton(`Download ${file.name}`, file.url));
  if (downloads.childElementCount) region.append(downloads);

  if (job.kind === "transcription" || job.kind === "alignment") renderTranscription(job, region, players, ctx);
  if (job.kind === "karaoke") {
    const lines = result.lines || [];
    if (lines.length) region.append(transcript(lines, players, ctx, "Lyrics"));
    else region.append(h("p", { class: "hint", text: "No vocals found: the package has no lyrics." }));
  }
  const analysis = job.kind === "analysis" ? result : result.analysis;
  if (analysis) region.append(analysisView(analysis, job, players, ctx));
  if (job.kind === "generation") region.append(generationView(job, ctx));
  if (job.metrics) region.append(metricsView(job.metrics));

  // Only one player at a time: starting one pauses the others.
  for (const audio of players) {
    audio.addEventListener("play", () => {
      for (const other of players) if (other !== audio) other.pause();
    });
  }
}

function downloadButton(label, url, role) {
  const button = h("button", { type: "button", class: "small secondary", "data-download": role || "file" }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    const text = button.textContent;
    button.textContent = "Preparing download…";
    try {
      const { blob, filename } = await fetchFile(url);
      saveBlob(blob, filename || url.split("/").pop());
    } catch (error) {
      announce(`Download failed: ${error.message}`);
    } finally {
      button.disabled = false;
      button.textContent = text;
    }
  });
  return button;
}

// ------------------------------------------------------------------ players

function stemPlayer(file, parent, ctx) {
  const fragment = $("#stem-template").content.cloneNode(true);
  const figure = fragment.querySelector(".stem");
  const audio = figure.querySelector("audio");
  const canvas = figure.querySelector("canvas");
  const name = file.stem || file.name.replace(/\.[^.]+$/, "");
  figure.dataset.stem = name;
  const label = figure.querySelector(".stem-name");
  label.textContent = name; // capitalised by the stylesheet; the note below is not
  if (file.tagged) label.after(" ", h("span", { class: "stem-note", text: "(with lyrics tags)" }));
  const info = [file.name, file.duration ? formatSeconds(file.duration) : "", formatBytes(file.size)];
  figure.querySelector(".stem-info").textContent = info.filter(Boolean).join(" · ");
  audio.setAttribute("aria-label", `Play ${file.name}`);
  canvas.setAttribute("aria-label", `Waveform of ${file.name}`);
  canvas.title = "Click to seek";
  const download = figure.querySelector('[data-action="download"]');
  download.replaceWith(downloadButton(`Download ${file.name}`, file.url));
  parent.append(figure);

  const controller = new AbortController();
  let objectUrl = null;
  let peaks = null;
  let frame = 0;
  const redraw = () => {
    if (peaks) drawWaveform(canvas, peaks, audio.duration ? audio.currentTime / audio.duration : 0);
  };
  const tick = () => {
    redraw();
    frame = audio.paused ? 0 : window.requestAnimationFrame(tick);
  };
  audio.addEventListener("play", () => {
    if (!frame) frame = window.requestAnimationFrame(tick);
  });
  audio.addEventListener("seeked", redraw);
  audio.addEventListener("timeupdate", () => {
    if (audio.paused) redraw();
  });
  canvas.addEventListener("click", (event) => {
    if (!audio.duration) return;
    const box = canvas.getBoundingClientRect();
    audio.currentTime = ((event.clientX - box.left) / box.width) * audio.duration;
  });
  const resize = new ResizeObserver(redraw);
  resize.observe(canvas);
  ctx.onCleanup(() => {
    controller.abort();
    resize.disconnect();
    window.cancelAnimationFrame(frame);
    audio.pause();
    audio.removeAttribute("src");
    audio.load();
    if (objectUrl) URL.revokeObjectURL(objectUrl);
  });

  figure.classList.add("loading");
  fetchFile(file.url, { signal: controller.signal })
    .then(async ({ blob }) => {
      objectUrl = URL.createObjectURL(blob);
      audio.src = objectUrl;
      figure.classList.remove("loading");
      peaks = await peaksOf(blob, 2048);
      redraw();
      figure.classList.add("ready");
    })
    .catch((error) => {
      if (controller.signal.aborted) return;
      figure.classList.remove("loading");
      if (!objectUrl) {
        figure.append(h("p", { class: "error", text: `Could not load ${file.name}: ${error.message}` }));
      } else {
        canvas.hidden = true; // playable, but this browser cannot decode it for a waveform
      }
    });
  return audio;
}

// ------------------------------------------------------------------ transcripts

function renderTranscription(job, region, players, ctx) {
  const result = job.result || {};
  const segments = result.segments || [];
  const head = [];
  if (result.language) {
    const probability = result.language_probability ? ` (${Math.round(result.language_probability * 100)}%)` : "";
    head.push(`Language: ${result.language}${probability}`);
  }
  if (result.duration) head.push(`Duration: ${formatSeconds(result.duration)}`);
  if (head.length) region.append(h("p", { class: "hint", text: head.join(" · ") }));

  // Transcriptions have no result audio: play the upload from this tab, or a
  // file the user picks, to follow the text.
  const playerBox = h("div", { class: "play-along" });
  region.append(playerBox);
  const attach = (file) => {
    playerBox.replaceChildren();
    const url = URL.createObjectURL(file);
    ctx.onCleanup(() => URL.revokeObjectURL(url));
    const audio = h("audio", { controls: true, src: url, "aria-label": `Play ${file.name}` });
    playerBox.append(h("p", { class: "hint", text: `Playing along: ${file.name}` }), audio);
    players.push(audio);
    ctx.onCleanup(() => audio.pause());
    list.follow(audio);
  };
  const list = transcript(segments, players, ctx, "Transcript");
  if (ctx.localFile) {
    attach(ctx.localFile);
  } else {
    const id = `play-along-${job.id}`;
    const input = h("input", { type: "file", id, accept: "audio/*,video/*" });
    input.addEventListener("change", () => input.files[0] && attach(input.files[0]));
    playerBox.append(h("label", { for: id, text: "Play the original file along with the text (optional)" }), input);
  }
  region.append(list);

  const formats = h("div", { class: "downloads" });
  const formatsOffered = job.kind === "alignment" ? [...TRANSCRIPT_FORMATS, ["lrc_words", "Enhanced LRC"]] : TRANSCRIPT_FORMATS;
  if (job.kind === "alignment") {
    const missed = (result.lines || []).filter((line) => !line.aligned).length;
    const note = `${result.words_aligned} of ${result.words_total} words timed` + (missed ? `; ${missed} line(s) not sung (no time)` : "");
    region.append(h("p", { class: "hint", text: note }));
  }
  for (const [format, label] of formatsOffered) {
    formats.append(downloadButton(`Download ${label}`, `${result.transcript_url}?format=${format}&download=true`));
  }
  region.append(formats);
}

/**
 * A list of timed lines; while any of ``players`` plays, the line at its
 * current time is highlighted (``aria-current``) and kept in view. Clicking a
 * line seeks there. Returns the element, with ``follow(audio)`` for players
 * added later.
 */
function transcript(lines, players, ctx, title) {
  const box = h("section", { class: "transcript", "aria-label": title });
  box.append(h("h4", { text: title }));
  const list = h("ol", { class: "lines" });
  box.append(list);
  const items = lines.map((line) => {
    // Timed words become their own spans, highlighted in turn as the song plays.
    const timedWords = (line.words || []).filter((w) => typeof w.start === "number");
    const words = timedWords.map((w) => ({ start: w.start, span: h("span", { class: "word", "data-start": w.start, text: String(w.word).trim() }) }));
    const text = h("span", { class: "text" });
    if (words.length) {
      words.forEach(({ span }, i) => text.append(...(i ? [" ", span] : [span])));
    } else {
      text.textContent = (line.text || "").trim();
    }
    const button = h(
      "button",
      { type: "button", class: "line", "data-start": line.start, title: "Play from here" },
      h("span", { class: "time", text: formatSeconds(line.start) }),
      text,
    );
    const item = h("li", {}, button);
    list.append(item);
    return { line, item, button, words };
  });
  if (!items.length) box.append(h("p", { class: "hint", text: "No speech found." }));

  let current = -1;
  let currentWord = null;
  let lastPlayed = null;
  const highlightWord = (index, time) => {
    let found = null;
    if (index !== -1) for (const word of items[index].words) if (word.start <= time + 0.02) found = word.span;
    if (found === currentWord) return;
    currentWord?.classList.remove("word-current");
    currentWord = found;
    currentWord?.classList.add("word-current");
  };
  const highlight = (time) => {
    let index = -1;
    for (let i = 0; i < items.length; i++) {
      if (items[i].line.start <= time + 0.05) index = i;
      else break;
    }
    if (index !== -1 && time > items[index].line.end + 1.0) index = -1; // a gap between lines
    highlightWord(index, time);
    if (index === current) return;
    if (current !== -1) {
      items[current].item.classList.remove("current");
      items[current].button.removeAttribute("aria-current");
    }
    current = index;
    if (index !== -1) {
      const { item, button } = items[index];
      item.classList.add("current");
      button.setAttribute("aria-current", "true");
      // Scroll the list only (never the page) to keep the line visible.
      const top = item.offsetTop - list.offsetTop;
      if (top < list.scrollTop || top + item.offsetHeight > list.scrollTop + list.clientHeight) {
        list.scrollTop = Math.max(0, top - list.clientHeight / 3);
      }
    }
  };
  const follow = (audio) => {
    const update = () => {
      lastPlayed = audio;
      highlight(audio.currentTime);
    };
    audio.addEventListener("timeupdate", update);
    audio.addEventListener("seeked", update);
  };
  for (const audio of players) follow(audio);
  for (const { line, button } of items) {
    button.addEventListener("click", () => {
      const audio = lastPlayed || players[0];
      if (!audio) return;
      audio.currentTime = line.start;
      audio.play().catch(() => {});
    });
  }
  box.follow = follow;
  ctx.onCleanup(() => {
    current = -1;
    currentWord = null;
  });
  return box;
}

// ------------------------------------------------------------------ analysis

function analysisView(analysis, job, players, ctx) {
  const rows = [];
  const key = analysis.key || {};
  if (key.name) {
    let text = `${key.name} (confidence ${Math.round((key.confidence || 0) * 100)}%)`;
    if (key.runner_up && key.runner_up.name) text += `; next best ${key.runner_up.name}`;
    rows.push(["Key", text]);
  } else if (analysis.key) {
    rows.push(["Key", "not found (no tonal content)"]);
  }
  const modulations = analysis.modulations || [];
  if (modulations.length) {
    rows.push(["Key changes", modulations.map((m) => `${formatSeconds(m.time)} to ${m.to}`).join(", ")]);
  }
  const tempo = analysis.tempo || {};
  if (tempo.bpm) rows.push(["Tempo", `${tempo.bpm} BPM (confidence ${Math.round((tempo.confidence || 0) * 100)}%)`]);
  const meter = analysis.meter || {};
  if (meter.time_signature) rows.push(["Time signature", `${meter.time_signature}, ${(analysis.bars || []).length} bars`]);
  if (analysis.beats) rows.push(["Beats", `${analysis.beats.length}`]);
  const tuning = analysis.tuning || {};
  if (tuning.reference_hz) {
    const cents = tuning.cents > 0 ? `+${tuning.cents}` : `${tuning.cents}`;
    rows.push(["Tuning", `A4 = ${tuning.reference_hz} Hz (${cents} cents)`]);
  }
  const loudness = analysis.loudness || {};
  const db = (value, unit) => (value === null || value === undefined ? "n/a" : `${value} ${unit}`);
  if (analysis.loudness) {
    rows.push(["Loudness", db(loudness.integrated_lufs, "LUFS")]);
    rows.push(["Loudness range", db(loudness.loudness_range_lu, "LU")]);
    rows.push(["Sample peak", db(loudness.sample_peak_dbfs, "dBFS")]);
    rows.push(["True peak", db(loudness.true_peak_dbtp, "dBTP")]);
  }
  if (analysis.duration) rows.push(["Duration", formatSeconds(analysis.duration)]);
  const list = h("dl", { class: "facts analysis" });
  for (const [term, value] of rows) list.append(h("dt", { text: term }), h("dd", { text: value }));
  const box = h("section", { class: "analysis-box", "aria-label": "Analysis" }, h("h4", { text: "Analysis" }), list);
  if ((analysis.chords || []).length && analysis.duration) box.append(chordTimeline(analysis, job, players, ctx));
  return box;
}

const CHORD_SYMBOLS = { maj: "", min: "m", 7: "7", maj7: "maj7", min7: "m7", dim: "dim", aug: "aug", sus2: "sus2", sus4: "sus4" };

/** ``A:min7`` as a chart shows it: ``Am7``; ``N`` is no chord. */
function chordSymbol(label) {
  if (!label || label === "N" || !label.includes(":")) return "N.C.";
  const [root, quality] = label.split(":");
  return root + (quality in CHORD_SYMBOLS ? CHORD_SYMBOLS[quality] : quality);
}

/**
 * The sections and the chord timeline as two strips over the song's length,
 * with a playhead that follows whichever player plays (the stems, or for an
 * analysis job the original file played along); the chord under the playhead
 * is highlighted and named. Clicking a chord or a section seeks there.
 */
function chordTimeline(analysis, job, players, ctx) {
  const duration = analysis.duration;
  const box = h("div", { class: "chord-timeline" });
  const percent = (seconds) => `${Math.min(100, Math.max(0, (seconds / duration) * 100))}%`;
  let lastPlayed = null;
  const seek = (time) => {
    const audio = lastPlayed || players[0];
    if (!audio) return;
    audio.currentTime = time;
    audio.play().catch(() => {});
  };

  if (job.kind === "analysis") {
    // An analysis has no result audio: play the upload from this tab, or a file the user picks.
    const playerBox = h("div", { class: "play-along" });
    box.append(playerBox);
    const attach = (file) => {
      playerBox.replaceChildren();
      const url = URL.createObjectURL(file);
      ctx.onCleanup(() => URL.revokeObjectURL(url));
      const audio = h("audio", { controls: true, src: url, "aria-label": `Play ${file.name}` });
      playerBox.append(h("p", { class: "hint", text: `Playing along: ${file.name}` }), audio);
      players.push(audio);
      ctx.onCleanup(() => audio.pause());
      follow(audio);
    };
    if (ctx.localFile) {
      window.setTimeout(() => attach(ctx.localFile));
    } else {
      const id = `play-along-${job.id}`;
      const input = h("input", { type: "file", id, accept: "audio/*,video/*" });
      input.addEventListener("change", () => input.files[0] && attach(input.files[0]));
      playerBox.append(h("label", { for: id, text: "Play the original file to follow the chords (optional)" }), input);
    }
  }

  const now = h("p", { class: "now-chord", text: "" });
  const strip = (items, className, label, text, title) => {
    const track = h("div", { class: `track ${className}`, role: "group", "aria-label": label });
    const cells = items.map((item) => {
      const cell = h("button", { type: "button", class: "segment", title: title(item), text: text(item) });
      cell.style.left = percent(item.start);
      cell.style.width = percent(item.end - item.start);
      cell.addEventListener("click", () => seek(item.start));
      track.append(cell);
      return cell;
    });
    const playhead = h("div", { class: "playhead", "aria-hidden": "true" });
    track.append(playhead);
    return { track, cells, playhead };
  };
  const sections = analysis.sections || [];
  const sectionStrip = strip(
    sections,
    "sections-track",
    "Sections",
    (s) => (s.likely_chorus ? `${s.label} (chorus)` : s.label),
    (s) => `Section ${s.label}${s.likely_chorus ? ", likely the chorus" : ""}, from ${formatSeconds(s.start)}`,
  );
  sections.forEach((s, i) => s.likely_chorus && sectionStrip.cells[i].classList.add("chorus"));
  const chords = analysis.chords;
  const chordStrip = strip(
    chords,
    "chords-track",
    "Chords",
    (c) => chordSymbol(c.label),
    (c) => `${chordSymbol(c.label)} (${c.label}) at ${formatSeconds(c.start)}`,
  );
  if (sections.length) box.append(h("p", { class: "hint", text: "Sections" }), sectionStrip.track);
  box.append(h("p", { class: "hint", text: "Chords" }), chordStrip.track, now);

  const bars = analysis.bars || [];
  let current = -1;
  const show = (time) => {
    for (const { playhead } of [sectionStrip, chordStrip]) playhead.style.left = percent(time);
    let index = -1;
    for (let i = 0; i < chords.length; i++) {
      if (chords[i].start <= time) index = i;
      else break;
    }
    if (index !== current) {
      if (current !== -1) chordStrip.cells[current].classList.remove("current");
      if (index !== -1) chordStrip.cells[index].classList.add("current");
      current = index;
    }
    let bar = null;
    for (const b of bars) {
      if (b.start <= time + 0.02) bar = b;
      else break;
    }
    const parts = [];
    if (index !== -1) parts.push(`Chord: ${chordSymbol(chords[index].label)}`);
    if (index !== -1 && index + 1 < chords.length) parts.push(`next ${chordSymbol(chords[index + 1].label)}`);
    if (bar) parts.push(`bar ${bar.number}`);
    now.textContent = parts.join(" · ");
  };
  function follow(audio) {
    let frame = 0;
    const tick = () => {
      show(audio.currentTime);
      frame = audio.paused ? 0 : window.requestAnimationFrame(tick);
    };
    audio.addEventListener("play", () => {
      lastPlayed = audio;
      if (!frame) frame = window.requestAnimationFrame(tick);
    });
    audio.addEventListener("seeked", () => show(audio.currentTime));
    audio.addEventListener("timeupdate", () => {
      if (audio.paused) show(audio.currentTime);
    });
    ctx.onCleanup(() => window.cancelAnimationFrame(frame));
  }
  for (const audio of players) follow(audio);
  show(0);
  return box;
}

// ------------------------------------------------------------------ generation

const PARAMETER_LABELS = [
  ["prompt", "Prompt"],
  ["model", "Model"],
  ["seed", "Seed"],
  ["duration", "Duration (s)"],
  ["guidance_scale", "Guidance"],
  ["temperature", "Temperature"],
  ["top_k", "Top k"],
  ["top_p", "Top p"],
  ["windows", "Windows"],
  ["sample_rate", "Sample rate"],
  ["channels", "Channels"],
];

function generationView(job, ctx) {
  const parameters = (job.result && job.result.parameters) || {};
  const list = h("dl", { class: "facts parameters" });
  for (const [key, label] of PARAMETER_LABELS) {
    if (parameters[key] === undefined || parameters[key] === null) continue;
    const value = typeof parameters[key] === "number" && !Number.isInteger(parameters[key]) ? +parameters[key].toFixed(3) : parameters[key];
    list.append(h("dt", { text: label }), h("dd", { text: String(value) }));
  }
  const again = h("button", { type: "button", "data-action": "regenerate" }, "Generate again with this seed");
  const edit = h("button", { type: "button", class: "secondary", "data-action": "edit" }, "Edit settings");
  again.addEventListener("click", () => ctx.regenerate && ctx.regenerate(job, { edit: false }));
  edit.addEventListener("click", () => ctx.regenerate && ctx.regenerate(job, { edit: true }));
  return h(
    "section",
    { class: "generation-box", "aria-label": "Generation parameters" },
    h("h4", { text: "Parameters" }),
    list,
    h("div", { class: "actions" }, again, edit),
  );
}

function metricsView(metrics) {
  const parts = [];
  if (metrics.run_seconds !== undefined) parts.push(`ran ${metrics.run_seconds.toFixed(1)} s`);
  if (metrics.queue_seconds !== undefined) parts.push(`waited ${metrics.queue_seconds.toFixed(1)} s`);
  if (metrics.real_time_factor) parts.push(`real-time factor ${metrics.real_time_factor.toFixed(2)}`);
  if (metrics.device) parts.push(`on ${metrics.device}`);
  return h("p", { class: "hint metrics", text: parts.join(" · ") });
}
