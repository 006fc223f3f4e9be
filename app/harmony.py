"""A musician's reading of a song from its beat-synchronous features: chords,
meter and downbeats, sections, key over time, and the chord chart.

``app.music_features`` does the signal processing (tuning, chroma frames,
onset envelopes, beats) and hands this module small arrays: a 12-bin chroma
and a bass chroma per frame, onset strengths, beat times. Everything here
works on one vector per beat or per bar, so a 20-minute song is a few
thousand rows and memory does not depend on the signal's length.

Why beat-synchronous: chords change on beats, bars start on beats, and
averaging the frames between two beats removes most passing notes and
attack noise before any decision is made. Decisions that depend on their
neighbours (a chord is more likely to last than to change, a key lasts for
bars) are taken by Viterbi over the beat sequence with a switching cost
rather than beat by beat.

Labels are Harte syntax (``C:maj``, ``A:min7``, ``N`` for no chord) so the
timeline scores with mir_eval and writes as a MIREX ``.lab`` file.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

__all__ = ["CHORD_QUALITIES", "describe", "render_chart", "render_lab"]

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# Harte shorthand -> semitones above the root. Triads first: on ties (a chroma
# that fits a triad and its seventh chord equally) the simpler chord wins.
CHORD_QUALITIES: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "dim": (0, 3, 6),
    "aug": (0, 4, 8),
    "sus2": (0, 2, 7),
    "sus4": (0, 5, 7),
}
# Score offsets per quality: a seventh chord or a rarer triad must fit the
# chroma clearly better than the plain triad it contains before it is named.
# (sus2 on C and sus4 on G are the same notes; aug is symmetric.)
_QUALITY_BIAS = {
    "maj": 0.0,
    "min": 0.0,
    "7": -0.02,
    "maj7": -0.06,
    "min7": -0.03,
    "dim": -0.05,
    "aug": -0.08,
    "sus2": -0.07,
    "sus4": -0.06,
}
# Weight of the bass chroma at the chord's root: a C:maj7 and an E:min share
# three notes; the bass tells them apart.
BASS_WEIGHT = 0.1
# Viterbi cost of changing chord between two beats, in cosine-score units.
CHORD_CHANGE_COST = 0.05
# Share of each pitch class's chroma taken off the pitch class a fifth above:
# the 3rd harmonic of a note sounds a twelfth up, so a major triad's third
# lights up the major seventh, and C:maj would read as C:maj7.
THIRD_HARMONIC = 0.2
# Beats whose chroma energy is below this share of the song's median are
# silence or unpitched (drums alone): no chord.
NO_CHORD_ENERGY = 0.08

KEY_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KEY_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# Local key: chroma summed over a Gaussian window of this many beats (std),
# and the cost of a key change in correlation units per beat.
KEY_WINDOW_BEATS = 12.0
KEY_CHANGE_COST = 4.0
# A key must hold this many beats to be reported as a modulation.
KEY_MIN_BEATS = 16

# A duple meter is read as 4 beats per bar when the cues on alternate strong
# beats differ by this many standard errors (a Welch t statistic).
QUADRUPLE_T = 1.5
# Sections: bars per phrase, and the similarity above which two phrases repeat.
PHRASE_BARS = 4
REPEAT_SIMILARITY = 0.6
OFFSET_ZERO_PREFERENCE = 1.25


def _templates() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(labels, unit-norm templates (K, 12), roots (K,), biases (K,))."""
    labels, rows, roots, biases = [], [], [], []
    for quality, intervals in CHORD_QUALITIES.items():
        for root in range(12):
            row = np.zeros(12)
            row[[(root + i) % 12 for i in intervals]] = 1.0
            labels.append(f"{PITCH_CLASSES[root]}:{quality}")
            rows.append(row / np.linalg.norm(row))
            roots.append(root)
            biases.append(_QUALITY_BIAS[quality])
    return labels, np.array(rows), np.array(roots), np.array(biases)


_LABELS, _CHORD_TEMPLATES, _ROOTS, _BIASES = _templates()


def _key_templates() -> tuple[list[str], np.ndarray]:
    names, rows = [], []
    for mode, profile in (("major", KEY_MAJOR), ("minor", KEY_MINOR)):
        for tonic in range(12):
            names.append(f"{PITCH_CLASSES[tonic]} {mode}")
            rows.append(np.roll(profile, tonic))
    t = np.array(rows)
    t = (t - t.mean(axis=1, keepdims=True)) / t.std(axis=1, keepdims=True)
    return names, t


_KEY_NAMES, _KEY_TEMPLATES = _key_templates()


# ---------------------------------------------------------------- beat grid


def segment_bounds(beats: np.ndarray, duration: float, fallback: float = 0.5) -> np.ndarray:
    """Edges of the analysis cells: the start, every beat, the end.

    A beat within 50 ms of the start opens the first cell at 0, so the
    timeline always covers the whole song.

    Without beats (no tempo) a regular ``fallback``-second grid is used so
    chords can still be named.
    """
    if len(beats) == 0:
        edges = np.arange(0.0, duration, fallback)
    else:
        edges = np.asarray(beats, dtype=float)
        edges = edges[edges < duration]
        if edges[0] > 0.05:
            edges = np.concatenate([[0.0], edges])
        else:  # the first beat's cell starts the song
            edges = np.concatenate([[0.0], edges[1:]])
    return np.concatenate([edges, [duration]])


def sync(frames: np.ndarray, frame_rate: float, edges: np.ndarray) -> np.ndarray:
    """Mean of the rows of ``frames`` whose times fall in each cell (cells, cols).

    Frame ``i`` is at ``i / frame_rate`` seconds. A cell shorter than one
    frame takes the nearest frame.
    """
    index = np.round(edges * frame_rate).astype(np.int64)
    index = np.clip(index, 0, len(frames))
    cumulative = np.concatenate([np.zeros((1, frames.shape[1])), np.cumsum(frames, axis=0)])
    lo, hi = index[:-1], np.maximum(index[1:], index[:-1] + 1)
    hi = np.minimum(hi, len(frames))
    lo = np.minimum(lo, hi - 1)
    return (cumulative[hi] - cumulative[lo]) / (hi - lo)[:, None]


# ------------------------------------------------------------------- chords


def chord_scores(chroma: np.ndarray, bass: np.ndarray) -> np.ndarray:
    """(cells, K + 1) fit of each chord label to each cell; last column is N.

    The fit is the cosine between the cell's chroma (less ``THIRD_HARMONIC``
    of the pitch class a fifth below, then square-root compressed, so a loud
    melody note does not outweigh the accompaniment) and the
    chord's template, plus ``BASS_WEIGHT`` times the share of the bass chroma
    on the chord's root, plus the quality's bias. N scores high only where
    there is next to no pitched energy.
    """
    corrected = np.maximum(chroma - THIRD_HARMONIC * np.roll(chroma, 7, axis=1), 0.0)
    compressed = np.sqrt(corrected)
    norm = np.linalg.norm(compressed, axis=1, keepdims=True)
    unit = compressed / np.maximum(norm, 1e-12)
    bass_share = bass / np.maximum(bass.sum(axis=1, keepdims=True), 1e-12)
    scores = unit @ _CHORD_TEMPLATES.T + BASS_WEIGHT * bass_share[:, _ROOTS] + _BIASES
    energy = chroma.sum(axis=1)
    reference = float(np.median(energy[energy > 0])) if np.any(energy > 0) else 0.0
    silent = energy <= NO_CHORD_ENERGY * reference
    no_chord = np.where(silent, 10.0, -10.0)
    return np.concatenate([scores, no_chord[:, None]], axis=1)


def viterbi(scores: np.ndarray, change_cost: float) -> np.ndarray:
    """The label path maximising the summed scores minus ``change_cost`` per change."""
    cells, labels = scores.shape
    back = np.zeros((cells, labels), dtype=np.int64)
    total = scores[0].copy()
    for t in range(1, cells):
        best = int(np.argmax(total))
        switch = total[best] - change_cost
        stay = total >= switch
        back[t] = np.where(stay, np.arange(labels), best)
        total = np.where(stay, total, switch) + scores[t]
    path = np.empty(cells, dtype=np.int64)
    path[-1] = int(np.argmax(total))
    for t in range(cells - 1, 0, -1):
        path[t - 1] = back[t, path[t]]
    return path


def label_of(index: int) -> str:
    return "N" if index >= len(_LABELS) else _LABELS[index]


def chords(chroma: np.ndarray, bass: np.ndarray, edges: np.ndarray) -> tuple[list[str], list[dict]]:
    """Per-cell labels and the merged timeline [{start, end, label, confidence}].

    Confidence is the mean, over the chord's cells, of the softmax share of
    the chosen label among all labels (temperature 0.05 on the fit): near 1
    when no other chord fits nearly as well.
    """
    scores = chord_scores(chroma, bass)
    path = viterbi(scores, CHORD_CHANGE_COST)
    shares = np.exp((scores - scores.max(axis=1, keepdims=True)) / 0.05)
    shares /= shares.sum(axis=1, keepdims=True)
    chosen = shares[np.arange(len(path)), path]
    labels = [label_of(int(i)) for i in path]
    timeline: list[dict] = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            timeline.append(
                {
                    "start": round(float(edges[start]), 3),
                    "end": round(float(edges[i]), 3),
                    "label": labels[start],
                    "confidence": round(float(chosen[start:i].mean()), 3),
                }
            )
            start = i
    return labels, timeline


# -------------------------------------------------------------------- meter


def _zscore(x: np.ndarray) -> np.ndarray:
    s = x.std()
    return (x - x.mean()) / s if s > 0 else np.zeros_like(x)


def meter(
    beat_chroma: np.ndarray,
    beat_bass: np.ndarray,
    beat_onset: np.ndarray,
    beat_low_onset: np.ndarray,
    beat_level: np.ndarray,
    subdivision: np.ndarray,
) -> tuple[int, int, str, float]:
    """Beats per bar, the phase of the first downbeat, the time signature, confidence.

    Downbeats are where harmony changes (chroma and bass novelty between a
    beat and the one before), where the bass and the strongest onsets fall,
    and where players lean (the beat's level). These cues, each z-scored,
    are summed per beat; a meter and phase score by how much the sum stands
    out on its downbeats against the other beats. Three beats against two is
    decided on that contrast; four against two by whether alternate strong
    beats differ clearly (``QUADRUPLE_T``), since a bar of four is two bars
    of two whose first beats are alike. ``subdivision`` holds, per beat, the onset
    strength at thirds minus at halves of the beat: when thirds dominate the
    meter is compound (two beats of three eighths: 6/8).
    """
    n = len(beat_onset)
    if n < 8:
        return 4, 0, "4/4", 0.0

    def change(x: np.ndarray) -> np.ndarray:
        unit = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        out = np.zeros(len(x))
        out[1:] = 1.0 - np.sum(unit[1:] * unit[:-1], axis=1)
        return out

    cues = (
        1.0 * _zscore(change(np.sqrt(np.maximum(beat_chroma, 0.0))))
        + 0.5 * _zscore(change(beat_bass))
        + 0.7 * _zscore(beat_low_onset)
        + 0.7 * _zscore(beat_onset)
        + 1.0 * _zscore(beat_level)
    )

    def contrast(beats_per_bar: int, phase: int) -> float:
        mask = np.zeros(n, bool)
        mask[phase::beats_per_bar] = True
        return float(cues[mask].mean() - cues[~mask].mean())

    triple = max(range(3), key=lambda p: contrast(3, p))
    duple = max(range(2), key=lambda p: contrast(2, p))
    if contrast(3, triple) > contrast(2, duple):
        beats_per_bar, phase = 3, triple
    else:
        # 2 or 4: is every other strong beat clearly stronger than the rest?
        first, second = cues[duple::4], cues[duple + 2 :: 4]
        spread = math.sqrt(first.var() / len(first) + second.var() / len(second)) + 1e-12
        t = (first.mean() - second.mean()) / spread
        if abs(t) >= QUADRUPLE_T:
            beats_per_bar, phase = 4, duple if t > 0 else duple + 2
        else:
            beats_per_bar, phase = 2, duple
    best = contrast(beats_per_bar, phase)
    compound = bool(np.median(subdivision) > 0) if len(subdivision) else False
    signature = {
        (2, False): "2/4",
        (3, False): "3/4",
        (4, False): "4/4",
        (2, True): "6/8",
        (3, True): "9/8",
        (4, True): "12/8",
    }[(beats_per_bar, compound)]
    confidence = float(np.clip(best / 2.0, 0.0, 1.0))
    return beats_per_bar, phase, signature, confidence


def subdivision_cue(envelope: np.ndarray, frame_rate: float, beats: np.ndarray) -> np.ndarray:
    """Per beat interval: onset strength at 1/3 and 2/3 minus at 1/2 of it."""
    out = []
    for a, b in itertools.pairwise(beats):

        def at(fraction: float, a: float = a, b: float = b) -> float:
            i = round((a + fraction * (b - a)) * frame_rate)
            return float(envelope[max(0, i - 2) : i + 3].max(initial=0.0))

        out.append(0.5 * (at(1 / 3) + at(2 / 3)) - at(0.5))
    return np.array(out)


# ----------------------------------------------------------------- sections


def sections(bar_features: np.ndarray, bar_starts: np.ndarray, end: float) -> list[dict]:
    """Sections with repetition labels from the bars' self-similarity.

    Bars are grouped into phrases of ``PHRASE_BARS`` (the grid offset that
    makes phrases repeat best is chosen); each phrase gets the label of the
    first earlier phrase it matches (mean bar-to-bar cosine similarity along
    the two phrases above ``REPEAT_SIMILARITY``), or a new label. Phrases
    that always come in the same order (``a`` always followed by ``b``) are
    then merged into one section, as a verse of two different phrases is one
    section. The label that recurs most (then covers most bars) is marked as
    the likely chorus, if it recurs at all.
    """
    bars = len(bar_features)
    if bars < 2 * PHRASE_BARS:
        if bars == 0:
            return []
        return [
            {
                "start": round(float(bar_starts[0]), 3),
                "end": round(end, 3),
                "label": "A",
                "likely_chorus": False,
            }
        ]
    # Centred: what every bar shares (the key's notes) says nothing about repetition.
    centred = bar_features - bar_features.mean(axis=0, keepdims=True)
    unit = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T

    def phrase_grid(offset: int) -> list[tuple[int, int]]:
        grid = [(0, offset)] if offset else []
        grid += [(s, min(s + PHRASE_BARS, bars)) for s in range(offset, bars, PHRASE_BARS)]
        return grid

    def phrase_similarity(p: tuple[int, int], q: tuple[int, int]) -> float:
        length = min(p[1] - p[0], q[1] - q[0])
        return float(np.mean(similarity[np.arange(length) + p[0], np.arange(length) + q[0]]))

    def repetition(grid: list[tuple[int, int]]) -> float:
        """How well the grid's phrases recur: each phrase's best match anywhere,
        counted above the repeat threshold only (a phrase straddling two
        sections half-matches many others, which says nothing), by its length."""
        credit = 0.0
        for p in grid:
            best = max(phrase_similarity(p, q) for q in grid if q != p)
            credit += (p[1] - p[0]) * max(0.0, best - REPEAT_SIMILARITY)
        return credit

    grids = [phrase_grid(offset) for offset in range(PHRASE_BARS)]
    credits = [repetition(g) for g in grids]
    # Sections usually start on bar 1: another grid must recur clearly better.
    credits[0] *= OFFSET_ZERO_PREFERENCE
    grid = grids[int(np.argmax(credits))]
    labels: list[int] = []
    for i, phrase in enumerate(grid):
        scores = [phrase_similarity(phrase, grid[j]) for j in range(i)]
        j = int(np.argmax(scores)) if scores else -1
        if j >= 0 and scores[j] >= REPEAT_SIMILARITY:
            labels.append(labels[j])
        else:
            labels.append(max(labels, default=-1) + 1)

    # Merge phrase pairs that always occur together, as byte-pair encoding does.
    units: list[tuple[int, ...]] = [(label,) for label in labels]
    spans = [(a, b) for a, b in grid]
    while True:
        pairs: dict[tuple[tuple[int, ...], tuple[int, ...]], int] = {}
        for x, y in itertools.pairwise(units):
            if x != y:
                pairs[(x, y)] = pairs.get((x, y), 0) + 1
        merge = None
        for (x, y), count in pairs.items():
            if count >= 2 and count == units.count(x) and count == units.count(y):
                merge = (x, y)
                break
        if merge is None:
            break
        new_units, new_spans, i = [], [], 0
        while i < len(units):
            if i + 1 < len(units) and (units[i], units[i + 1]) == merge:
                new_units.append(units[i] + units[i + 1])
                new_spans.append((spans[i][0], spans[i + 1][1]))
                i += 2
            else:
                new_units.append(units[i])
                new_spans.append(spans[i])
                i += 1
        units, spans = new_units, new_spans

    letters: dict[tuple[int, ...], str] = {}
    for u in units:
        if u not in letters:
            letters[u] = _letter(len(letters))
    counts = {u: units.count(u) for u in letters}
    bar_counts = {
        u: sum(b - a for s, (a, b) in zip(units, spans, strict=True) if s == u) for u in letters
    }
    chorus = max(letters, key=lambda u: (counts[u], bar_counts[u]))
    has_chorus = counts[chorus] >= 2
    out = []
    for u, (a, b) in zip(units, spans, strict=True):
        stop = float(bar_starts[b]) if b < bars else end
        out.append(
            {
                "start": round(float(bar_starts[a]), 3),
                "end": round(stop, 3),
                "label": letters[u],
                "likely_chorus": bool(has_chorus and u == chorus),
            }
        )
    return out


def _letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


# ---------------------------------------------------------------- key curve


def key_curve(beat_chroma: np.ndarray, edges: np.ndarray) -> list[dict]:
    """Key regions [{start, end, key}]: local keys with a switching cost.

    Each beat's chroma is smoothed over a Gaussian window of
    ``KEY_WINDOW_BEATS`` and correlated with the 24 Krumhansl-Kessler
    profiles; Viterbi with ``KEY_CHANGE_COST`` picks the key path, and regions
    shorter than ``KEY_MIN_BEATS`` are folded into their predecessor, so a
    borrowed chord is not a modulation.
    """
    n = len(beat_chroma)
    if n == 0:
        return []
    radius = int(3 * KEY_WINDOW_BEATS)
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / KEY_WINDOW_BEATS) ** 2)
    smoothed = np.stack(
        [np.convolve(beat_chroma[:, c], kernel)[radius : radius + n] for c in range(12)], axis=1
    )
    mean = smoothed.mean(axis=1, keepdims=True)
    std = smoothed.std(axis=1, keepdims=True)
    z = np.where(std > 0, (smoothed - mean) / np.maximum(std, 1e-12), 0.0)
    correlation = z @ _KEY_TEMPLATES.T / 12.0
    path = viterbi(correlation, KEY_CHANGE_COST)
    regions: list[list[int]] = []
    for i, k in enumerate(path):
        if regions and regions[-1][2] == k:
            regions[-1][1] = i + 1
        else:
            regions.append([i, i + 1, int(k)])
    merged: list[list[int]] = []
    for region in regions:
        if merged and (region[1] - region[0] < KEY_MIN_BEATS or region[2] == merged[-1][2]):
            merged[-1][1] = region[1]
        else:
            merged.append(region)
    if len(merged) > 1 and merged[0][1] - merged[0][0] < KEY_MIN_BEATS:
        merged[1][0] = merged[0][0]
        merged.pop(0)
    return [
        {
            "start": round(float(edges[a]), 3),
            "end": round(float(edges[b]), 3),
            "key": _KEY_NAMES[k],
        }
        for a, b, k in merged
    ]


# ----------------------------------------------------------------- the whole


def describe(
    *,
    chroma: np.ndarray,
    bass: np.ndarray,
    chroma_rate: float,
    envelope: np.ndarray,
    low_envelope: np.ndarray,
    onset_rate: float,
    beats: list[float],
    duration: float,
) -> dict[str, Any]:
    """Chords, meter, bars, tempo curve, sections and key regions as result fields."""
    beat_times = np.asarray(beats, dtype=float)
    edges = segment_bounds(beat_times, duration)
    cell_chroma = sync(chroma, chroma_rate, edges)
    cell_bass = sync(bass, chroma_rate, edges)
    labels, timeline = chords(cell_chroma, cell_bass, edges)

    result: dict[str, Any] = {"chords": timeline}
    # Cells that start on a beat (the first cell may be a lead-in before it).
    beat_times = beat_times[beat_times < duration]
    first_beat_cell = len(edges) - 1 - len(beat_times) if len(beat_times) else 0
    beat_labels = labels[first_beat_cell:] if len(beat_times) else []
    on_beats = slice(first_beat_cell, first_beat_cell + len(beat_times))

    def at_beats(env: np.ndarray) -> np.ndarray:
        i = np.round(beat_times * onset_rate).astype(np.int64)
        return np.array([env[max(0, j - 2) : j + 3].max(initial=0.0) for j in i])

    if len(beat_times) >= 2:
        beats_per_bar, phase, signature, confidence = meter(
            cell_chroma[on_beats],
            cell_bass[on_beats],
            at_beats(envelope),
            at_beats(low_envelope),
            np.log(cell_chroma[on_beats].sum(axis=1) + 1e-9),
            subdivision_cue(envelope, onset_rate, beat_times),
        )
        downbeat_index = np.arange(phase, len(beat_times), beats_per_bar)
        downbeats = beat_times[downbeat_index]
        positions = [((i - phase) % beats_per_bar) + 1 for i in range(len(beat_times))]
        bars = []
        for number, first in enumerate(downbeat_index, start=1):
            bars.append(
                {
                    "number": number,
                    "start": round(float(beat_times[first]), 3),
                    "chords": beat_labels[first : first + beats_per_bar],
                }
            )
        if phase > 0:  # a pickup bar before the first downbeat
            bars.insert(
                0,
                {
                    "number": 0,
                    "start": round(float(beat_times[0]), 3),
                    "chords": beat_labels[:phase],
                },
            )
        result["meter"] = {
            "time_signature": signature,
            "beats_per_bar": beats_per_bar,
            "confidence": round(confidence, 3),
        }
        result["downbeats"] = [round(float(t), 3) for t in downbeats]
        result["beat_positions"] = positions
        result["bars"] = bars
        result["tempo_curve"] = _tempo_curve(beat_times, downbeat_index)
        # Sections on bar features: the bar's beat chromas side by side.
        starts = downbeat_index[downbeat_index + beats_per_bar <= len(beat_times)]
        beat_chroma = np.sqrt(np.maximum(cell_chroma[on_beats], 0.0))
        beat_chroma /= np.maximum(np.linalg.norm(beat_chroma, axis=1, keepdims=True), 1e-12)
        features = np.zeros((len(starts), beats_per_bar * 12))
        for row, s in enumerate(starts):
            features[row] = beat_chroma[s : s + beats_per_bar].reshape(-1)
        result["sections"] = sections(features, beat_times[starts], duration)
    else:
        result.update(
            meter={"time_signature": None, "beats_per_bar": None, "confidence": 0.0},
            downbeats=[],
            beat_positions=[],
            bars=[],
            tempo_curve=[],
            sections=[],
        )
    energy = cell_chroma.sum(axis=1)
    result["keys"] = key_curve(cell_chroma, edges) if np.any(energy > 0) else []
    result["modulations"] = [
        {"time": b["start"], "from": a["key"], "to": b["key"]}
        for a, b in zip(result["keys"][:-1], result["keys"][1:], strict=True)
    ]
    return result


def _tempo_curve(beats: np.ndarray, downbeat_index: np.ndarray) -> list[dict]:
    """Local tempo at each bar start: the median beat interval over the bar
    and its neighbours (three bars), so one late beat does not show as a change."""
    intervals = np.diff(beats)
    curve = []
    span = max(2, int(np.median(np.diff(downbeat_index))) if len(downbeat_index) > 1 else 4)
    for first in downbeat_index:
        lo, hi = max(0, first - span), min(len(intervals), first + 2 * span)
        if hi > lo:
            curve.append(
                {
                    "time": round(float(beats[first]), 3),
                    "bpm": round(60.0 / float(np.median(intervals[lo:hi])), 1),
                }
            )
    return curve


# -------------------------------------------------------------- downloads

_DISPLAY = {
    "maj": "",
    "min": "m",
    "7": "7",
    "maj7": "maj7",
    "min7": "m7",
    "dim": "dim",
    "aug": "aug",
    "sus2": "sus2",
    "sus4": "sus4",
}


def display_name(label: str) -> str:
    """``A:min7`` -> ``Am7``, ``N`` -> ``N.C.`` (what a chart shows)."""
    if label == "N" or ":" not in label:
        return "N.C."
    root, quality = label.split(":", 1)
    return root + _DISPLAY.get(quality, quality)


def render_lab(result: dict[str, Any]) -> str:
    """The chord timeline as a MIREX ``.lab`` file: ``start end label`` lines."""
    return "".join(
        f"{c['start']:.3f}\t{c['end']:.3f}\t{c['label']}\n" for c in result.get("chords", [])
    )


def render_chart(result: dict[str, Any], bars_per_line: int = 4) -> str:
    """A chord chart a musician reads: a header, then bars between bar lines.

    A bar with one chord shows it once; a bar whose chord changes shows one
    symbol per beat, ``.`` where the chord carries on from the beat before.
    """
    key = (result.get("key") or {}).get("name") or "unknown"
    meter = (result.get("meter") or {}).get("time_signature") or "unknown"
    bpm = result.get("tempo_bpm")
    tuning = result.get("tuning") or {}
    lines = [
        f"Key: {key}   Time: {meter}   Tempo: {bpm if bpm is not None else 'unknown'} BPM",
    ]
    if tuning.get("reference_hz") is not None:
        lines.append(f"Tuning: A4 = {tuning['reference_hz']} Hz ({tuning['cents']:+.1f} cents)")
    sections = result.get("sections") or []
    lines.append("")
    bars = result.get("bars") or []
    if not bars:
        lines.append(" ".join(display_name(c["label"]) for c in result.get("chords", [])))
        return "\n".join(lines) + "\n"
    cells = []
    for bar in bars:
        symbols = [display_name(c) for c in bar["chords"]]
        if len(set(symbols)) <= 1:
            text = symbols[0] if symbols else ""
        else:
            text = " ".join(
                s if i == 0 or s != symbols[i - 1] else "." for i, s in enumerate(symbols)
            )
        cells.append((bar["number"], bar["start"], text))
    width = max(len(t) for _, _, t in cells) + 2
    section_at = {s["start"]: s for s in sections}
    row: list[str] = []
    row_number = cells[0][0]
    for number, start, text in cells:
        section = section_at.get(start)
        if section is not None and row:
            lines.append(f"{row_number:>4} |" + "|".join(row) + "|")
            row = []
        if section is not None:
            chorus = " (chorus)" if section["likely_chorus"] else ""
            lines.append(f"[{section['label']}{chorus}]")
        if not row:
            row_number = number
        row.append(f" {text:<{width}}")
        if len(row) == bars_per_line:
            lines.append(f"{row_number:>4} |" + "|".join(row) + "|")
            row = []
    if row:
        lines.append(f"{row_number:>4} |" + "|".join(row) + "|")
    return "\n".join(lines) + "\n"
