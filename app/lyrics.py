"""Synced lyrics: lines built from timed words, and ID3 frames for karaoke players.

Whisper segments can run for many seconds and cross phrase boundaries, which
makes poor karaoke lines. Lines are rebuilt from the words instead: a new line
starts after a pause, after sentence punctuation, or before the line would
exceed ``max_chars``. The renderers in ``app.transcripts`` then turn the lines
into LRC, enhanced LRC, SRT and WebVTT, exactly as they render transcripts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SENTENCE_END = (".", "!", "?", "…", "。", "！", "？")  # noqa: RUF001 (CJK punctuation)
CLAUSE_END = (",", ";", ":", "，", "、")  # noqa: RUF001


@dataclass
class Line:
    start: float
    end: float
    words: list[dict[str, Any]] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(w["word"].strip() for w in self.words if w["word"].strip())

    def to_dict(self, *, with_words: bool = True) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "text": self.text,
        }
        if with_words:
            entry["words"] = [
                {"start": w["start"], "end": w["end"], "word": w["word"].strip()}
                for w in self.words
                if w["word"].strip()
            ]
        return entry


def build_lines(
    words: Iterable[dict[str, Any]],
    *,
    max_chars: int = 42,
    max_gap: float = 1.0,
    min_chars: int = 12,
) -> list[Line]:
    """Group timed words into singable lines.

    A line ends: before a pause longer than ``max_gap`` seconds; after a word
    ending a sentence (once the line has ``min_chars``); after a clause comma
    when the line is already past two thirds of ``max_chars``; and before a
    word that would push it past ``max_chars``. Every word lands in exactly one
    line, in order.
    """
    lines: list[Line] = []
    current: list[dict[str, Any]] = []
    length = 0

    def flush() -> None:
        nonlocal current, length
        if current:
            lines.append(Line(start=current[0]["start"], end=current[-1]["end"], words=current))
        current, length = [], 0

    for word in words:
        text = word["word"].strip()
        if not text:
            continue
        if current:
            previous = current[-1]["word"].strip()
            gap = float(word["start"]) - float(current[-1]["end"])
            if (
                gap > max_gap
                or length + 1 + len(text) > max_chars
                or (previous.endswith(SENTENCE_END) and length >= min_chars)
                or (previous.endswith(CLAUSE_END) and length >= max_chars * 2 // 3)
            ):
                flush()
        current.append(word)
        length += len(text) + (1 if length else 0)
    flush()
    return lines


def as_transcript(lines: list[Line], *, language: str | None, duration: float) -> dict[str, Any]:
    """The lines in the shape of a transcription result, so the transcript
    renderers produce LRC, SRT and WebVTT with one cue per line."""
    segments = []
    for index, line in enumerate(lines):
        entry = line.to_dict()
        segments.append(
            {
                "id": index,
                "start": entry["start"],
                "end": entry["end"],
                "text": " " + entry["text"],
                "words": [{**w, "word": " " + w["word"]} for w in entry["words"]],
            }
        )
    return {
        "text": "\n".join(line.text for line in lines),
        "language": language,
        "duration": round(duration, 3),
        "segments": segments,
    }


# ISO 639-1 -> ISO 639-2 for the ID3 language field (the common ones; "eng" otherwise).
_ID3_LANGUAGES = {
    "en": "eng", "de": "deu", "fr": "fra", "es": "spa", "it": "ita", "pt": "por", "nl": "nld",
    "ru": "rus", "ja": "jpn", "zh": "zho", "ko": "kor", "pl": "pol", "sv": "swe", "tr": "tur",
    "ar": "ara", "hi": "hin", "uk": "ukr", "cs": "ces", "fi": "fin", "da": "dan", "no": "nor",
}  # fmt: skip


def embed_in_mp3(
    path: Path,
    lines: list[Line],
    *,
    language: str | None,
    title: str | None = None,
    artist: str | None = None,
) -> None:
    """Write synced (SYLT) and plain (USLT) lyrics, plus title/artist, into an MP3.

    SYLT carries one entry per line, stamped in milliseconds (time stamp format
    2), which is what karaoke players and many music players display in time.
    """
    from mutagen.id3 import ID3, SYLT, TIT2, TPE1, USLT, ID3NoHeaderError

    try:
        tags = ID3(path)
    except ID3NoHeaderError:
        tags = ID3()
    lang = _ID3_LANGUAGES.get(language or "", "eng")
    plain = "\n".join(line.text for line in lines)
    tags.delall("USLT")
    tags.delall("SYLT")
    if lines:  # a song without vocals gets no lyrics frames at all
        tags.setall("USLT", [USLT(encoding=3, lang=lang, desc="", text=plain)])
        tags.setall(
            "SYLT",
            [
                SYLT(
                    encoding=3,
                    lang=lang,
                    format=2,
                    type=1,
                    desc="",
                    text=[(line.text, round(line.start * 1000)) for line in lines],
                )
            ],
        )
    if title:
        tags.setall("TIT2", [TIT2(encoding=3, text=title)])
    if artist:
        tags.setall("TPE1", [TPE1(encoding=3, text=artist)])
    tags.save(path, v2_version=3)
