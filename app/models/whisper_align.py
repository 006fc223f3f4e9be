"""Known lyrics aligned to a song, word by word, with a Whisper model.

1. Find where words are sung: faster-whisper transcribes the song with word
   timestamps (its VAD on, so long instrumental parts are skipped).
2. Match the lyric words to the recognised words in order (a global sequence
   alignment on normalised words, ``match_words``): repeated choruses pair up
   by order, a verse that is not sung stays unmatched, and the recogniser's
   mistakes are gaps or substitutions. A line with enough matched words
   (``anchors_line``) is anchored at the times the recogniser gave them.
3. Group the anchored lines into windows of at most 30 s, cut at the longest
   pauses (and at any pause over ``MAX_GAP``). Each window's lyric text is
   force-aligned to its audio through the model's cross-attention
   (CTranslate2's ``Whisper.align``, the dynamic time warping faster-whisper
   uses for its word timestamps), which times every word of its lines.
4. Lines without anchors (the recogniser missed them, or they are not sung)
   are tried where they would be: between two anchored lines of a window, in
   the audio between two windows, or before the first or after the last
   anchored line (at most 30 s of it). A line is kept only when the forced
   alignment finds its text likely (mean token probability at least
   ``RESCUE_CONFIDENCE``; ``MIN_CONFIDENCE`` for an anchored line); otherwise
   the window is aligned again without it.
5. Refine each word where the signal allows (``refine_onsets``): its start
   moves to an onset of the voice-band energy near the model's start (the
   background's steady part taken out), chosen for all words of a window at
   once, in order; its end moves back to where the voice stops when the
   model ran it on into a pause.

A line never placed stays unaligned: ``start``/``end`` None and ``aligned``
False for it and its words. No time is ever interpolated.

Nothing here imports faster-whisper or CTranslate2 at import time.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.lyrics_input import Lyrics, LyricWord, normalise

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30.0
TOKENS_PER_SECOND = 50  # the encoder's output frames (20 ms each)

# Scores of the word matching: an exact normalised token, a similar one
# (a recogniser's misspelling), anything else; a gap on either side.
EXACT, SIMILAR, OTHER, GAP = 3, 1, -2, -1
SIMILARITY = 0.7
WINDOW_PAD = 1.0  # s of audio kept around a window's anchored lines
MAX_GAP = 4.0  # s: a longer pause between anchored lines starts a new window
# A line's mean token probability in the forced alignment below which it is
# taken as not sung: for a line the recogniser placed, and for one it missed.
MIN_CONFIDENCE, RESCUE_CONFIDENCE = 0.1, 0.3
MIN_GAP_AUDIO = 0.5  # s: less audio between two anchored lines cannot hold a missed one
LEAD = " \u266a"  # ♪
MAX_TEXT_TOKENS = 440  # of the decoder's 448 positions, less the start and end tokens


# --------------------------------------------------------------------------- matching


def _bigrams(token: str) -> set[str]:
    padded = f"^{token}$"
    return {padded[i : i + 2] for i in range(len(padded) - 1)}


def _similarity_table(
    left: Sequence[str], right: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores between every distinct token of ``left`` and of ``right``, and
    each sequence as indices into its vocabulary. Similar: difflib's ratio at
    least SIMILARITY, looked at only for pairs sharing enough letter pairs
    (their Dice coefficient, one matrix product for all pairs)."""
    lvocab = {token: i for i, token in enumerate(dict.fromkeys(left))}
    rvocab = {token: i for i, token in enumerate(dict.fromkeys(right))}
    lgrams = [_bigrams(t) for t in lvocab]
    rgrams = [_bigrams(t) for t in rvocab]
    ids = {g: i for i, g in enumerate({g for grams in lgrams + rgrams for g in grams})}

    def matrix(grams: list[set[str]]) -> np.ndarray:
        out = np.zeros((len(grams), len(ids)), np.float32)
        for row, found in enumerate(grams):
            out[row, [ids[g] for g in found]] = 1.0
        return out

    lmat, rmat = matrix(lgrams), matrix(rgrams)
    shared = lmat @ rmat.T
    dice = 2 * shared / (lmat.sum(axis=1)[:, None] + rmat.sum(axis=1)[None, :])
    table = np.full((len(lvocab), len(rvocab)), OTHER, np.int32)
    lnames, rnames = list(lvocab), list(rvocab)
    for i, j in zip(*np.nonzero(dice >= 0.25), strict=True):
        a, b = lnames[i], rnames[j]
        if a == b:
            table[i, j] = EXACT
        elif difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= SIMILARITY:
            table[i, j] = SIMILAR
    lidx = np.array([lvocab[t] for t in left], np.int64)
    ridx = np.array([rvocab[t] for t in right], np.int64)
    return table, lidx, ridx


def align_sequences(left: Sequence[str], right: Sequence[str]) -> list[tuple[int, int, int]]:
    """Global alignment of two token sequences (Needleman-Wunsch, linear gaps);
    the pairs ``(i, j, score)`` of tokens aligned to each other with a
    positive score (exact or similar)."""
    n, m = len(left), len(right)
    if n == 0 or m == 0:
        return []
    table, lidx, ridx = _similarity_table(left, right)
    steps = np.arange(m + 1, dtype=np.int64)
    previous = steps * GAP
    # 0: diagonal, 1: up (a left token unmatched), 2: left (a right token unmatched)
    moves = np.zeros((n + 1, m + 1), np.int8)
    moves[0, 1:] = 2
    for i in range(1, n + 1):
        scores = table[lidx[i - 1], ridx]
        diag = previous[:-1] + scores
        up = previous[1:] + GAP
        best = np.empty(m + 1, np.int64)
        best[0] = previous[0] + GAP
        best[1:] = np.maximum(diag, up)
        row = np.maximum.accumulate(best - steps * GAP) + steps * GAP
        move = np.where(row > best, 2, 0).astype(np.int8)
        move[0] = 1
        move[1:][(row[1:] == best[1:]) & (up > diag)] = 1
        moves[i] = move
        previous = row
    pairs: list[tuple[int, int, int]] = []
    i, j = n, m
    while i > 0 or j > 0:
        move = moves[i, j]
        if move == 0 and i > 0 and j > 0:
            score = int(table[lidx[i - 1], ridx[j - 1]])
            if score > 0:
                pairs.append((i - 1, j - 1, score))
            i, j = i - 1, j - 1
        elif move == 1 and i > 0:
            i -= 1
        else:
            j -= 1
    pairs.reverse()
    return pairs


def match_words(lyric: Sequence[Sequence[str]], heard: Sequence[Sequence[str]]) -> list[int | None]:
    """For each lyric word (its normalised tokens), the index of the heard
    word it is matched to, or None. Words are matched through their tokens,
    so "1999" and "nineteen ninety-nine" meet."""
    left = [(w, t) for w, tokens in enumerate(lyric) for t in tokens]
    right = [(w, t) for w, tokens in enumerate(heard) for t in tokens]
    pairs = align_sequences([t for _w, t in left], [t for _w, t in right])
    result: list[int | None] = [None] * len(lyric)
    for i, j, _score in pairs:
        word = left[i][0]
        if result[word] is None:
            result[word] = right[j][0]
    return result


# --------------------------------------------------------------------------- aligning


@dataclass
class _Timed:
    start: float
    end: float
    confidence: float


def _recognise(
    model: Any, samples: np.ndarray, language: str | None, progress: Callable[[float], None]
) -> tuple[list[dict[str, Any]], str | None]:
    """The words faster-whisper hears, and the language (detected when None)."""
    duration = len(samples) / SAMPLE_RATE
    segments, info = model.transcribe(
        samples,
        language=language,
        word_timestamps=True,
        vad_filter=True,
        beam_size=5,
        condition_on_previous_text=False,
    )
    words: list[dict[str, Any]] = []
    for segment in segments:
        for word in segment.words or []:
            words.append(
                {
                    "word": word.word,
                    "start": float(word.start),
                    "end": float(word.end),
                    "probability": float(word.probability),
                }
            )
        if duration > 0:
            progress(min(float(segment.end) / duration, 1.0))
    return words, info.language or language


def _tokenizer(model: Any, language: str | None) -> Any:
    from faster_whisper.tokenizer import Tokenizer

    multilingual = bool(model.model.is_multilingual)
    return Tokenizer(
        model.hf_tokenizer,
        multilingual,
        task="transcribe",
        language=(language or "en") if multilingual else None,
    )


def force_align(
    model: Any,
    tokenizer: Any,
    samples: np.ndarray,
    offset: float,
    words: Sequence[LyricWord],
) -> list[_Timed]:
    """Time ``words`` in ``samples`` (at most 30 s, starting ``offset`` seconds
    into the song) through the model's cross-attention.

    The path of the time warping starts at the window's first frame and ends
    at its last, so the first word would take all the audio before it and the
    last all the audio after it: a music note (which Whisper writes for
    music) before the first word and after the last takes that instead.
    """
    from faster_whisper.audio import pad_or_trim

    if not words:
        return []
    note = tokenizer.encode(LEAD)
    flat: list[int] = []
    spans: list[tuple[int, int]] = []
    for position, word in enumerate(words):
        if position == 0:
            flat += note
        tokens = tokenizer.encode(" " + word.text)
        spans.append((len(flat), len(flat) + len(tokens)))
        flat += tokens
    flat += note
    features = model.feature_extractor(samples)[..., :-1]
    num_frames = min(features.shape[-1], 3000)
    encoded = model.encode(pad_or_trim(features))
    result = model.model.align(
        encoded, tokenizer.sot_sequence, [flat], num_frames, median_filter_width=7
    )[0]
    probs = np.asarray(result.text_token_probs, np.float64)
    text_indices = np.array([pair[0] for pair in result.alignments])
    time_indices = np.array([pair[1] for pair in result.alignments])
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = time_indices[jumps] / TOKENS_PER_SECOND
    last_jump = len(jump_times) - 1
    timed = []
    for first, last in spans:
        start = offset + float(jump_times[min(first, last_jump)])
        end = offset + float(jump_times[min(last, last_jump)])
        confidence = float(probs[first:last].mean()) if last > first else 0.0
        timed.append(_Timed(start, max(end, start), confidence))
    return timed


# --------------------------------------------------------------------------- onsets

HOP = 160  # 10 ms frames for the onset search
N_FFT = 512
VOICE_BAND = (250.0, 4000.0)  # Hz
LAG = 0.1  # the cross-attention's word starts come this late (bench/alignment.py)
SEARCH_BEFORE, SEARCH_AFTER = 0.6, 0.15  # where an onset is looked for around a start, s
SPREAD = 0.3  # s: how far an onset may be from the start the model gives, at little cost
KEEP_COST = 3.0  # choosing no onset (the model's start, less LAG)
STRENGTH_WEIGHT = 2.0
MIN_SEPARATION = 0.08  # s between two words' onsets
ABSORBED = 0.8  # s: a word this long in the warping path has taken a pause with it
QUIET_DB, QUIET_SECONDS = 18.0, 0.2  # a pause within a word's span: that much quieter, that long
FRAMES = SAMPLE_RATE / HOP  # onset-search frames per second


def _band_energy(samples: np.ndarray) -> np.ndarray:
    """Voice-band energy in dB per 10 ms frame, with the steady background
    (each frequency's median over 3 s: held chords, a drone) taken out."""
    count = len(samples) // HOP
    if count < 2:
        return np.zeros(count)
    padded = np.pad(samples.astype(np.float32), (N_FFT // 2, N_FFT // 2 + HOP))
    index = np.arange(N_FFT)[None, :] + HOP * np.arange(count)[:, None]
    freqs = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    band = (freqs >= VOICE_BAND[0]) & (freqs <= VOICE_BAND[1])
    window = np.hanning(N_FFT).astype(np.float32)
    power = np.empty((count, int(band.sum())), np.float32)
    for first in range(0, count, 2000):  # in blocks: bounded memory
        frames = padded[index[first : first + 2000]] * window
        power[first : first + 2000] = (np.abs(np.fft.rfft(frames, axis=1)) ** 2)[:, band]
    step, half = 50, 150
    centres = np.arange(0, count, step)
    background = np.stack([np.median(power[max(0, c - half) : c + half], axis=0) for c in centres])
    power = np.maximum(
        power - background[np.minimum(np.arange(count) // step, len(centres) - 1)], 1e-3 * power
    )
    energy = 10 * np.log10(power.sum(axis=1) + 1e-12)
    return np.maximum(energy, energy.max() - 60.0)


def detect_onsets(energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the voice-band energy (``_band_energy``) rises from a dip: times
    (s from its first frame) and strengths (dB of the rise), for onsets rising
    3 dB or more. An onset's time is the first frame 6 dB (or half the rise)
    above the dip."""
    from numpy.lib.stride_tricks import sliding_window_view

    before, after = 8, 4  # frames: the dip looked for, the level after
    if len(energy) < before + after + 2:
        return np.zeros(0), np.zeros(0)
    padded = np.pad(energy, (before, after), mode="edge")
    dip = sliding_window_view(padded[: -after - 1], before).min(axis=1)[: len(energy)]
    level = sliding_window_view(padded[before:], after).mean(axis=1)[: len(energy)]
    rise = np.maximum(level - dip, 0)
    peaks = np.flatnonzero((rise[1:-1] > rise[:-2]) & (rise[1:-1] >= rise[2:])) + 1
    peaks = peaks[rise[peaks] >= 3.0]
    found: dict[int, float] = {}
    for peak in peaks:
        first = max(0, peak - before)
        above = np.flatnonzero(energy[first : peak + after] >= dip[peak] + min(6.0, rise[peak] / 2))
        frame = first + int(above[0]) if len(above) else int(peak)
        found[frame] = max(found.get(frame, 0.0), float(rise[peak]))
    frames = np.array(sorted(found), np.int64)
    return frames * HOP / SAMPLE_RATE, np.array([found[f] for f in frames])


def _first_pause(voiced: np.ndarray, length: int) -> int | None:
    """The first frame of the first run of ``length`` unvoiced frames that
    follows a voiced one, or None."""
    loud = np.flatnonzero(voiced)
    if not len(loud):
        return None
    quiet = ~voiced[loud[0] :]
    runs = np.convolve(quiet.astype(np.int32), np.ones(length, np.int32), "valid")
    full = np.flatnonzero(runs >= length)
    return int(loud[0] + full[0]) if len(full) else None


def refine_onsets(samples: np.ndarray, offset: float, timed: list[_Timed]) -> list[_Timed]:
    """Move each word's start to an energy onset near where the model puts it,
    when there is one: all words at once (a Viterbi path over each word's
    candidate onsets, in order, ``MIN_SEPARATION`` apart), each candidate
    costing its distance from the model's start (less ``LAG``) over ``SPREAD``
    less the log of its relative strength; a word without an onset near keeps
    the model's start, less ``LAG``. A word that took a pause with it in the
    warping path (longer than ``ABSORBED``) looks through all of it."""
    if not timed:
        return timed
    energy = _band_energy(samples)
    times, strengths = detect_onsets(energy)
    times = times + offset
    scale = float(np.percentile(strengths, 90)) if len(strengths) else 1.0
    options: list[list[tuple[float, float]]] = []
    for word in timed:
        prior = word.start - LAG
        low, high = (
            word.start - SEARCH_BEFORE,
            max(min(word.start + SEARCH_AFTER, word.end), word.start + 0.05),
        )
        spread = SPREAD
        if word.end - word.start > ABSORBED:
            high, spread = word.end - 0.1, 1.0
        near = np.flatnonzero((times >= low) & (times <= high))
        options.append(
            [(prior, KEEP_COST)]
            + [
                (
                    float(times[k]),
                    abs(float(times[k]) - prior) / spread
                    - STRENGTH_WEIGHT * float(np.log(strengths[k] / scale)),
                )
                for k in near
            ]
        )
    costs = np.array([cost for _t, cost in options[0]])
    back: list[np.ndarray] = []
    for previous, current in itertools.pairwise(options):
        before = np.array([t for t, _c in previous])
        total, links = [], []
        for t, cost in current:
            allowed = np.where(before <= t - MIN_SEPARATION, costs, np.inf)
            k = int(np.argmin(allowed))
            if not np.isfinite(allowed[k]):  # nothing early enough: the cheapest, penalised
                k = int(np.argmin(costs))
                allowed = costs + 50.0
            total.append(float(allowed[k]) + cost)
            links.append(k)
        costs = np.array(total)
        back.append(np.array(links))
    choice = [int(np.argmin(costs))]
    for links in reversed(back):
        choice.append(int(links[choice[-1]]))
    choice.reverse()
    starts = [options[i][k][0] for i, k in enumerate(choice)]
    # A word ends where the voice does when the warping path ran it on into a
    # pause: at the first stretch of QUIET_SECONDS or more, after some voice,
    # of frames QUIET_DB below the window's loud ones.
    voiced = energy >= (np.percentile(energy, 95) - QUIET_DB if len(energy) else 0.0)
    refined = []
    for i, (word, start) in enumerate(zip(timed, starts, strict=True)):
        start = max(start, offset)
        end = word.end
        if i + 1 < len(starts):
            end = min(end, starts[i + 1])
        first, last = round((start - offset) * FRAMES), round((end - offset) * FRAMES)
        pause = _first_pause(voiced[first:last], round(QUIET_SECONDS * FRAMES))
        if pause is not None:
            end = offset + (first + pause) / FRAMES
        refined.append(_Timed(start, max(end, start + 0.02), word.confidence))
    return refined


def _windows(
    anchored: list[tuple[int, float, float]], duration: float, pad: float, max_gap: float
) -> list[tuple[float, float, list[int]]]:
    """Group anchored lines ``(line, start, end)`` (in lyric order) into windows
    ``(start, end, lines)`` of at most WINDOW_SECONDS, cutting at the largest
    gaps between consecutive lines."""
    groups: list[list[tuple[int, float, float]]] = []

    def split(items: list[tuple[int, float, float]]) -> None:
        span = items[-1][2] - items[0][1] + 2 * pad
        gaps = [items[k + 1][1] - items[k][2] for k in range(len(items) - 1)]
        if len(items) == 1 or (span <= WINDOW_SECONDS - 0.5 and max(gaps) <= max_gap):
            groups.append(items)
            return
        cut = int(np.argmax(gaps)) + 1
        split(items[:cut])
        split(items[cut:])

    if anchored:
        split(anchored)
    windows = []
    for index, group in enumerate(groups):
        low = group[0][1] - pad
        high = group[-1][2] + pad
        if index > 0:
            low = max(low, (groups[index - 1][-1][2] + group[0][1]) / 2)
        if index + 1 < len(groups):
            high = min(high, (group[-1][2] + groups[index + 1][0][1]) / 2)
        low, high = max(0.0, low), min(duration, high)
        if high - low > WINDOW_SECONDS:  # one line longer than a window: its start
            high = low + WINDOW_SECONDS
        windows.append((low, high, [line for line, _s, _e in group]))
    return windows


def _between(line_ids: Sequence[int]) -> set[int]:
    """The lines between consecutive anchored lines (lyric order) of a window."""
    return {k for a, b in itertools.pairwise(sorted(line_ids)) for k in range(a + 1, b)}


def _by_line(words: Sequence[LyricWord], timed: Sequence[_Timed]) -> dict[int, list[_Timed]]:
    lines: dict[int, list[_Timed]] = {}
    for word, times in zip(words, timed, strict=True):
        lines.setdefault(word.line, []).append(times)
    return lines


def _mean_confidence(timed: Sequence[_Timed]) -> float:
    return float(np.mean([t.confidence for t in timed])) if timed else 0.0


def _align_lines(
    model: Any,
    tokenizer: Any,
    chunk: np.ndarray,
    offset: float,
    lyrics: Lyrics,
    placed: Sequence[int],
    tried: Sequence[int],
    refine: bool,
) -> dict[int, _Timed]:
    """Force-align lines ``placed`` (the recogniser heard them) and ``tried``
    (it did not) in ``chunk``; a line the model finds unlikely (mean token
    probability below MIN_CONFIDENCE, or RESCUE_CONFIDENCE for a tried line) is
    dropped and the rest aligned again without it. Word index -> times."""
    # The decoder holds 448 tokens: lines beyond that are left out, tried
    # ones first (a 30 s window rarely holds a quarter of that).
    size = {
        k: sum(len(tokenizer.encode(" " + w.text)) for w in lyrics.lines[k].words)
        for k in {*placed, *tried}
    }
    budget = MAX_TEXT_TOKENS - 2 * len(tokenizer.encode(LEAD))
    kept: set[int] = set()
    for k in [*sorted(placed), *sorted(tried)]:
        if sum(size[j] for j in kept) + size[k] <= budget:
            kept.add(k)
    lines = sorted(kept)
    while lines:
        words = [w for k in lines for w in lyrics.lines[k].words]
        aligned = force_align(model, tokenizer, chunk, offset, words)
        by_line = _by_line(words, aligned)
        dropped = {
            k
            for k in lines
            if _mean_confidence(by_line[k]) < (MIN_CONFIDENCE if k in placed else RESCUE_CONFIDENCE)
        }
        if not dropped:
            if refine:
                aligned = refine_onsets(chunk, offset, aligned)
            return {w.index: t for w, t in zip(words, aligned, strict=True)}
        lines = [k for k in lines if k not in dropped]
    return {}


def anchors_line(matched: int, words: int) -> bool:
    """Whether ``matched`` recognised words place a line of ``words``: all of a
    one-word line, else two or more and at least a quarter of them. One stray
    match ("the", "I") must not pull in a verse that is not sung."""
    return matched >= words or (matched >= 2 and matched * 4 >= words)


def align_lyrics(
    model: Any,
    samples: np.ndarray,
    lyrics: Lyrics,
    *,
    language: str | None = None,
    progress: Callable[[float], None] = lambda _f: None,
    heard: list[dict[str, Any]] | None = None,
    refine: bool = True,
) -> dict[str, Any]:
    """Align ``lyrics`` to 16 kHz mono float32 ``samples`` with a loaded
    ``faster_whisper.WhisperModel``. ``progress`` gets 0..1 (the recognition
    pass is the first 60%); what it raises propagates (a cancel). ``language``
    is forced to "en" for an English-only model, and detected by a
    multilingual one when None (with ``heard`` given: "en" then). ``heard``: the recognised
    words to anchor on (``{"word", "start", "end"}`` dicts, as the "words" of
    ``whisper_engine.transcribe``), when already at hand; by default the song
    is transcribed here. ``refine=False`` keeps the model's own times.

    Returns ``{"lines": [...], "words_total", "words_aligned", "duration",
    "language"}``; each line is ``{"text", "start", "end", "aligned",
    "words"}`` (its text as the user wrote it, tags removed) and each word
    ``{"word", "start", "end", "confidence", "aligned"}`` (the user's spelling;
    confidence: the mean probability of its tokens in the forced alignment),
    times in seconds from the start of ``samples``, None where not aligned.
    """
    samples = np.asarray(samples, np.float32)
    duration = len(samples) / SAMPLE_RATE
    if not model.model.is_multilingual:
        language = "en"
    progress(0.0)
    if heard is None:
        heard, language = _recognise(model, samples, language, lambda f: progress(0.6 * f))
    words = lyrics.words
    matches = match_words([w.norm for w in words], [normalise(h["word"]) for h in heard])

    anchored: list[tuple[int, float, float]] = []
    for index, line in enumerate(lyrics.lines):
        found = [heard[m] for m in (matches[w.index] for w in line.words) if m is not None]
        if anchors_line(len(found), len(line.words)):
            anchored.append((index, found[0]["start"], found[-1]["end"]))

    # Windows of anchored lines; each also tries the lines between two of its
    # anchored lines. Lines between two windows, or before the first anchored
    # line or after the last, are tried in the audio between them.
    jobs = [
        (low, high, line_ids, sorted(_between(line_ids)))
        for low, high, line_ids in _windows(anchored, duration, pad=WINDOW_PAD, max_gap=MAX_GAP)
    ]
    covered = {k for _l, _h, ids, extra in jobs for k in [*ids, *extra]}
    edges = [(-1, 0.0, 0.0), *anchored, (len(lyrics.lines), duration, duration)]
    for (a, _s, end_a), (b, start_b, _e) in itertools.pairwise(edges):
        missed = [k for k in range(a + 1, b) if k not in covered]
        if not missed or start_b - end_a < MIN_GAP_AUDIO:
            continue
        if a < 0 < b < len(lyrics.lines):  # before the first anchored line
            low, high = max(end_a, start_b - WINDOW_SECONDS), start_b
        elif a >= 0:  # between two anchored lines, or after the last
            low, high = end_a, min(start_b, end_a + WINDOW_SECONDS)
            if b < len(lyrics.lines) and start_b - end_a > WINDOW_SECONDS:
                continue  # too long a stretch to search for them
        else:  # nothing anchored at all: the song's first 30 s
            low, high = 0.0, min(duration, WINDOW_SECONDS)
        jobs.append((low, high, [], missed))
    timed: dict[int, _Timed] = {}
    tokenizer = _tokenizer(model, language)
    for number, (low, high, line_ids, extra) in enumerate(jobs):
        chunk = samples[int(low * SAMPLE_RATE) : int(high * SAMPLE_RATE)]
        timed.update(_align_lines(model, tokenizer, chunk, low, lyrics, line_ids, extra, refine))
        progress(0.6 + 0.4 * (number + 1) / len(jobs))

    lines_out = []
    for line in lyrics.lines:
        entries = []
        for word in line.words:
            t = timed.get(word.index)
            entries.append(
                {
                    "word": word.text,
                    "start": round(t.start, 3) if t else None,
                    "end": round(t.end, 3) if t else None,
                    "confidence": round(t.confidence, 4) if t else None,
                    "aligned": t is not None,
                }
            )
        placed = [e for e in entries if e["aligned"]]
        lines_out.append(
            {
                "text": line.text,
                "start": placed[0]["start"] if placed else None,
                "end": placed[-1]["end"] if placed else None,
                "aligned": bool(placed),
                "words": entries,
            }
        )
    progress(1.0)
    return {
        "lines": lines_out,
        "words_total": len(words),
        "words_aligned": len(timed),
        "duration": round(duration, 3),
        "language": language,
    }
