"""Known lyrics aligned to a song, word by word, with a Whisper model.

1. Find where words are sung: faster-whisper transcribes the song with word
   timestamps (its VAD on, so long instrumental parts are skipped).
2. Match the lyric words to the recognised words in order (a global sequence
   alignment on normalised words, ``match_words``): repeated choruses pair up
   by order, a verse that is not sung stays unmatched, and the recogniser's
   mistakes are gaps or substitutions. Matched lyric words are anchors.
3. Cut the song into windows of at most 30 s at the gaps between anchors and
   give each window the lyric lines anchored in it. Each window's lyric text
   is force-aligned to its audio through the model's cross-attention
   (CTranslate2's ``Whisper.align``, the dynamic time warping faster-whisper
   uses for its word timestamps), which times every word of those lines, the
   ones the recogniser missed included.
4. A line with no anchor is never given invented times: it stays unaligned
   (``start``/``end`` None, ``aligned`` False), as does any word the forced
   alignment cannot place inside the window's voiced audio.

Nothing here imports faster-whisper or CTranslate2 at import time.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Sequence
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
LEAD = " \u266a"  # ♪


# --------------------------------------------------------------------------- matching


def _similarity_table(
    left: Sequence[str], right: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores between every distinct token of ``left`` and of ``right``, and
    each sequence as indices into its vocabulary."""
    lvocab = {token: i for i, token in enumerate(dict.fromkeys(left))}
    rvocab = {token: i for i, token in enumerate(dict.fromkeys(right))}
    table = np.full((len(lvocab), len(rvocab)), OTHER, np.int32)
    for a, i in lvocab.items():
        matcher = difflib.SequenceMatcher(None, a, autojunk=False)
        for b, j in rvocab.items():
            if a == b:
                table[i, j] = EXACT
            else:
                matcher.set_seq2(b)
                if matcher.quick_ratio() >= SIMILARITY and matcher.ratio() >= SIMILARITY:
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
) -> list[dict[str, Any]]:
    duration = len(samples) / SAMPLE_RATE
    segments, _info = model.transcribe(
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
    return words


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
    breaks: Collection[int] = (),
    median_filter_width: int = 7,
    trail: bool = True,
) -> list[_Timed]:
    """Time ``words`` in ``samples`` (at most 30 s, starting ``offset`` seconds
    into the song) through the model's cross-attention.

    The path of the time warping starts at the window's first frame and ends
    at its last, so the first word would take all the audio before it and the
    last all the audio after it: a music note (which Whisper writes for
    music) before the first word and after the last takes that instead, and
    one before each word of ``breaks`` (positions in ``words``) takes a pause.
    """
    from faster_whisper.audio import pad_or_trim

    if not words:
        return []
    note = tokenizer.encode(LEAD)
    flat: list[int] = []
    spans: list[tuple[int, int]] = []
    for position, word in enumerate(words):
        if position == 0 or position in breaks:
            flat += note
        tokens = tokenizer.encode(" " + word.text)
        spans.append((len(flat), len(flat) + len(tokens)))
        flat += tokens
    if trail:
        flat += note
    features = model.feature_extractor(samples)[..., :-1]
    num_frames = min(features.shape[-1], 3000)
    encoded = model.encode(pad_or_trim(features))
    result = model.model.align(
        encoded, tokenizer.sot_sequence, [flat], num_frames, median_filter_width=median_filter_width
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


def align_lyrics(
    model: Any,
    samples: np.ndarray,
    lyrics: Lyrics,
    *,
    language: str | None = None,
    progress: Callable[[float], None] = lambda _f: None,
    heard: list[dict[str, Any]] | None = None,
    **tuning: Any,
) -> dict[str, Any]:
    """Align ``lyrics`` to 16 kHz mono float32 ``samples`` with a loaded
    ``faster_whisper.WhisperModel``. ``progress`` gets 0..1; what it raises
    propagates (a cancel).

    Returns ``{"lines": [...], "words_total", "words_aligned", "duration",
    "language"}``; each line is ``{"text", "start", "end", "aligned",
    "words"}`` and each word ``{"word", "start", "end", "confidence",
    "aligned"}``, times in seconds, None where not aligned.
    """
    samples = np.asarray(samples, np.float32)
    duration = len(samples) / SAMPLE_RATE
    if not model.model.is_multilingual:
        language = "en"
    progress(0.0)
    if heard is None:
        heard = _recognise(model, samples, language, lambda f: progress(0.6 * f))
    words = lyrics.words
    matches = match_words([w.norm for w in words], [normalise(h["word"]) for h in heard])

    anchored: list[tuple[int, float, float]] = []
    for index, line in enumerate(lyrics.lines):
        found = [heard[m] for m in (matches[w.index] for w in line.words) if m is not None]
        if found:
            anchored.append((index, found[0]["start"], found[-1]["end"]))

    timed: dict[int, _Timed] = {}
    windows = _windows(
        anchored, duration, pad=tuning.get("pad", 1.0), max_gap=tuning.get("max_gap", 4.0)
    )
    tokenizer = _tokenizer(model, language)
    for number, (low, high, line_ids) in enumerate(windows):
        window_words = [w for k in line_ids for w in lyrics.lines[k].words]
        breaks = set()
        if tuning.get("breaks", "none") != "none":
            for k in line_ids[1:]:
                first = lyrics.lines[k].words[0]
                breaks.add(window_words.index(first))
        chunk = samples[int(low * SAMPLE_RATE) : int(high * SAMPLE_RATE)]
        for word, times in zip(
            window_words,
            force_align(
                model,
                tokenizer,
                chunk,
                low,
                window_words,
                breaks,
                tuning.get("mfw", 7),
                tuning.get("trail", True),
            ),
            strict=True,
        ):
            timed[word.index] = times
        progress(0.6 + 0.4 * (number + 1) / len(windows))

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
