// Waveform images drawn client-side: the file is decoded with the Web Audio
// API (decodeAudioData) and reduced to min/max pairs, then drawn in a canvas
// with the played part in the accent colour.

let decoder = null;

function context() {
  // An OfflineAudioContext decodes without an audio device or a user gesture.
  if (!decoder) decoder = new OfflineAudioContext(1, 1, 44100);
  return decoder;
}

/** ``buckets`` [min, max] pairs over all channels of ``blob``'s audio. */
export async function peaksOf(blob, buckets) {
  const buffer = await context().decodeAudioData(await blob.arrayBuffer());
  const length = buffer.length;
  const mins = new Float32Array(buckets).fill(0);
  const maxs = new Float32Array(buckets).fill(0);
  const per = Math.max(1, Math.floor(length / buckets));
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const data = buffer.getChannelData(c);
    for (let b = 0; b < buckets; b++) {
      const start = Math.floor((b * length) / buckets);
      const end = Math.min(length, start + per);
      let lo = mins[b];
      let hi = maxs[b];
      for (let i = start; i < end; i++) {
        const v = data[i];
        if (v < lo) lo = v;
        else if (v > hi) hi = v;
      }
      mins[b] = lo;
      maxs[b] = hi;
    }
  }
  return { mins, maxs, duration: buffer.duration };
}

function colour(el, name, fallback) {
  const value = getComputedStyle(el).getPropertyValue(name).trim();
  return value || fallback;
}

/** Draws ``peaks`` into ``canvas`` at its CSS size; ``played`` (0..1) is highlighted. */
export function drawWaveform(canvas, peaks, played) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
  const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, width, height);
  const middle = height / 2;
  const buckets = peaks.mins.length;
  const wave = colour(canvas, "--wave", "#8a94a6");
  const done = colour(canvas, "--wave-played", "#2156d8");
  const split = Math.round(Math.min(1, Math.max(0, played || 0)) * width);
  for (let x = 0; x < width; x++) {
    const from = Math.floor((x * buckets) / width);
    const to = Math.max(from + 1, Math.floor(((x + 1) * buckets) / width));
    let lo = 0;
    let hi = 0;
    for (let b = from; b < to && b < buckets; b++) {
      if (peaks.mins[b] < lo) lo = peaks.mins[b];
      if (peaks.maxs[b] > hi) hi = peaks.maxs[b];
    }
    const top = middle - hi * middle;
    const bottom = middle - lo * middle;
    g.fillStyle = x < split ? done : wave;
    g.fillRect(x, top, 1, Math.max(ratio, bottom - top));
  }
  if (split > 0 && split < width) {
    g.fillStyle = done;
    g.fillRect(split, 0, Math.max(1, ratio), height);
  }
}
