"""The speech clips of tests/data/speech, what is said in them, and the word
error rate that scores a transcript against it (bench/transcription.py uses
the same one, so its figures compare with the tests')."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

SPEECH = Path(__file__).resolve().parents[1] / "data" / "speech"
REFERENCES: dict[str, str] = json.loads((SPEECH / "references.json").read_text())


def words_of(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate: word-level edit distance over the reference length."""
    ref, hyp = words_of(reference), words_of(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        current = [i]
        for j, h in enumerate(hyp, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (r != h)))
        previous = current
    return previous[-1] / max(len(ref), 1)


# Long-form speech: many distinct lines, so a transcript that skips or repeats
# one shows it. Common words espeak-ng says clearly and no numbers (which
# Whisper may write as digits).
ADJECTIVES = (
    "quiet", "yellow", "clever", "heavy", "gentle", "lucky", "little", "ancient", "silver",
    "hungry", "patient", "curious", "golden", "friendly", "narrow", "careful", "sleepy",
    "brave", "wooden", "purple",
)  # fmt: skip
NOUNS = (
    "farmer", "teacher", "painter", "doctor", "sailor", "banker", "pilot", "gardener",
    "lawyer", "singer", "driver", "builder", "dancer", "hunter", "fisher", "student",
    "soldier", "merchant", "captain", "neighbor",
)  # fmt: skip
VERBS = (
    "carried", "painted", "found", "opened", "cleaned", "followed", "watched", "moved",
    "pushed", "lifted", "borrowed", "repaired", "counted", "visited", "described", "ordered",
)  # fmt: skip
THINGS = (
    "basket", "window", "ladder", "blanket", "hammer", "letter", "garden", "table",
    "wagon", "mirror", "candle", "bucket", "jacket", "pencil", "carpet", "bicycle",
)  # fmt: skip
PLACES = (
    "river", "market", "station", "harbor", "village", "library", "mountain", "kitchen",
    "forest", "castle", "bridge", "museum", "island", "valley", "factory", "church",
)  # fmt: skip


def distinct_lines(count: int, seed: int = 7) -> list[str]:
    """``count`` sentences of ten words, the same for a seed; two lines share
    at most two of their six chosen words, so one line misheard in a word or
    two is still nearer to itself than to any other (``line_counts``)."""
    import random

    rng = random.Random(seed)
    picks: list[tuple[str, ...]] = []
    while len(picks) < count:
        pick = (
            rng.choice(ADJECTIVES), rng.choice(NOUNS), rng.choice(VERBS),
            rng.choice(ADJECTIVES), rng.choice(THINGS), rng.choice(PLACES),
        )  # fmt: skip
        if all(sum(a == b for a, b in zip(pick, other, strict=True)) <= 2 for other in picks):
            picks.append(pick)
    return [f"The {a} {n} {v} the {a2} {t} near the {p}." for a, n, v, a2, t, p in picks]


def line_counts(lines: list[str], hypothesis: str, threshold: float = 0.7) -> list[int]:
    """How many times each line appears in ``hypothesis``: 0 is a skipped
    line, 2 or more a repeated one.

    Every stretch of the hypothesis as long as a line is scored against that
    line (the share of its words matching in order). An occurrence is a
    stretch whose score peaks there (a line said twice in a row peaks twice),
    reaches ``threshold`` (a misheard word or two still counts) and is the
    best any line scores there or a few words either side (a line misheard
    into another's words counts for the one it matches better); peaks of one
    line less than half a line apart are one occurrence."""
    from difflib import SequenceMatcher

    hyp = words_of(hypothesis)
    scores: list[list[float]] = []
    for line in lines:
        ref = words_of(line)
        matcher = SequenceMatcher(autojunk=False)
        matcher.set_seq2(ref)
        row = [0.0] * (len(hyp) + 2)  # a zero either side: row[1 + start]
        for start in range(len(hyp)):
            window = hyp[start : start + len(ref)]
            if len(set(window) & set(ref)) < threshold * len(ref) - 4:
                continue  # cannot reach the threshold: skip the exact comparison
            matcher.set_seq1(window)
            row[1 + start] = sum(b.size for b in matcher.get_matching_blocks()) / len(ref)
        scores.append(row)
    best = [max(column) for column in zip(*scores, strict=True)]
    counts = [0] * len(lines)
    for number, row in enumerate(scores):
        half = len(words_of(lines[number])) // 2
        last = -len(hyp)
        for at in range(1, len(hyp) + 1):
            score = row[at]
            # Best within a few words either side: a misheard line scores less
            # on its own words than it does shifted onto a neighbour's.
            near = max(best[max(at - half + 1, 0) : at + half])
            if score >= threshold and score >= near and row[at - 1] < score >= row[at + 1]:
                # Peaks less than half a line apart are one misheard occurrence.
                counts[number] += at - last > half
                last = at
    return counts


def synthesise(
    lines: list[str], gap: float = 0.6, voice: str = "en-us"
) -> tuple[np.ndarray, list[float]]:
    """The lines spoken by espeak-ng one after another (16 kHz mono float32,
    ``gap`` seconds of silence after each) and the second each line starts at."""
    import io
    import subprocess

    import soundfile as sf
    import soxr

    pieces: list[np.ndarray] = []
    onsets: list[float] = []
    at = 0
    silence = np.zeros(int(gap * 16000), dtype=np.float32)
    for line in lines:
        wav = subprocess.run(
            ["espeak-ng", "-v", voice, "-s", "150", "-g", "3", "--stdout", line],
            check=True,
            capture_output=True,
        ).stdout
        samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
        speech = soxr.resample(samples, rate, 16000).astype(np.float32)
        loud = np.flatnonzero(np.abs(speech) > 0.01 * np.abs(speech).max())
        speech = speech[loud[0] : loud[-1] + 1]  # espeak-ng's own silences trimmed
        onsets.append(at / 16000)
        pieces += [speech, silence]
        at += speech.size + silence.size
    audio = np.concatenate(pieces)
    return (audio * (0.8 / max(float(np.abs(audio).max()), 1e-9))).astype(np.float32), onsets
