"""The speech clips of tests/data/speech, what is said in them, and the word
error rate that scores a transcript against it (bench/transcription.py uses
the same one, so its figures compare with the tests')."""

from __future__ import annotations

import json
import re
from pathlib import Path

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
