"""A Whisper transcription result rendered as JSON, text, subtitles, TSV or LRC.

The transcription task stores faster-whisper's result as a plain dict
(``text``, ``language``, ``duration``, ``segments`` with optional ``words``,
optional flattened ``words``); this module turns that dict into the documents a
client downloads from ``GET /api/v1/jobs/{id}/transcript?format=...`` and into
the ``verbose_json`` body of the OpenAI-compatible route. It is pure (no Flask,
no model), so every format can be checked byte for byte.

Choices made once for every format:

- Times are rounded half up on the decimal value of the float (what a person
  reading the JSON expects: 1.0005 s is ``00:00:01,001``, not the ``,000``
  binary rounding would give); negative times become 0.
- Whitespace inside a segment is collapsed to single spaces, and segments
  whose text is empty are left out: a blank line ends an SRT/WebVTT cue.
- A subtitle cue holds at most ``max_lines`` lines of at most
  ``max_line_chars`` characters (code points), filled greedily. A segment that
  does not fit becomes several cues: at word boundaries with the words' own
  times when Whisper gave word timestamps, else with the segment's time shared
  out in proportion to characters. A single word longer than a line is cut
  (the only way to keep the limit, e.g. for scripts written without spaces).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from app.errors import ServiceError

__all__ = [
    "CONTENT_TYPES",
    "EXTENSIONS",
    "FORMATS",
    "LANGUAGE_NAMES",
    "language_name",
    "openai_verbose_json",
    "render",
    "render_enhanced_lrc",
]

FORMATS = ("json", "txt", "srt", "vtt", "tsv", "lrc")
CONTENT_TYPES: dict[str, str] = {
    "json": "application/json",
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
    "tsv": "text/tab-separated-values; charset=utf-8",
    "lrc": "text/plain; charset=utf-8",
}
# File name extensions, without the dot (as ``storage.adopt_input`` takes them).
EXTENSIONS: dict[str, str] = {fmt: fmt for fmt in FORMATS}

LRC_CREATOR = "AiMusicSeparator"
DEFAULT_LINE_CHARS = 42
OPENAI_TASKS = ("transcribe", "translate")

# Whisper's languages (openai-whisper's tokenizer.LANGUAGES): OpenAI's
# verbose_json names the language in English words, faster-whisper gives codes.
LANGUAGE_NAMES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak",
    "te": "telugu", "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian",
    "az": "azerbaijani", "sl": "slovenian", "kn": "kannada", "et": "estonian",
    "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian",
    "sw": "swahili", "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala",
    "km": "khmer", "sn": "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans",
    "oc": "occitan", "ka": "georgian", "be": "belarusian", "tg": "tajik", "sd": "sindhi",
    "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek",
    "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen",
    "nn": "nynorsk", "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish",
    "my": "myanmar", "bo": "tibetan", "tl": "tagalog", "mg": "malagasy", "as": "assamese",
    "tt": "tatar", "haw": "hawaiian", "ln": "lingala", "ha": "hausa", "ba": "bashkir",
    "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}  # fmt: skip

_TOKEN = re.compile(r"\s*\S+")


# -- public API ---------------------------------------------------------------


def render(
    result: Mapping[str, Any], fmt: str, *, max_line_chars: int = 42, max_lines: int = 2
) -> str:
    """``result`` as a document in ``fmt`` (one of ``FORMATS``).

    ``max_line_chars`` and ``max_lines`` shape SRT/WebVTT cues; LRC uses
    ``max_line_chars`` only (a karaoke line is one line); the other formats
    ignore both. An unknown format is a client's mistake, hence a
    ``ServiceError`` (422, ``invalid_parameter``) the route can pass on as is.
    """
    if fmt not in FORMATS:
        raise ServiceError(
            f"Unknown transcript format '{fmt}'; expected one of {', '.join(FORMATS)}.",
            code="invalid_parameter",
            status=422,
            errors={"format": f"must be one of {', '.join(FORMATS)}"},
        )
    _check_limits(max_line_chars, max_lines)
    if fmt == "json":
        return json.dumps(dict(result), ensure_ascii=False, indent=2) + "\n"
    segments = _segments(result)
    if fmt == "txt":
        return "".join(f"{text}\n" for s in segments if (text := _one_line(s.get("text"))))
    if fmt == "tsv":
        rows = [
            f"{_scaled(s.get('start'), 1000)}\t{_scaled(s.get('end'), 1000)}\t{text}\n"
            for s in segments
            if (text := _one_line(s.get("text")))
        ]
        return "start\tend\ttext\n" + "".join(rows)
    if fmt == "lrc":
        lines = [
            f"[{_lrc_time(time)}]{text}\n"
            for s in segments
            for time, text, _ in _lrc_lines(s, max_line_chars)
        ]
        return _lrc_header(result) + "".join(lines)
    cues = [cue for s in segments for cue in _cues(s, max_line_chars, max_lines)]
    if fmt == "srt":
        blocks = [
            f"{n}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n" + "\n".join(c.lines) + "\n"
            for n, c in enumerate(cues, start=1)
        ]
        return "\n".join(blocks)
    blocks = [
        f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n"
        + "\n".join(_vtt_escape(line) for line in c.lines)
        + "\n"
        for c in cues
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def render_enhanced_lrc(result: Mapping[str, Any], *, max_line_chars: int = 42) -> str:
    """Enhanced (A2) LRC: every word stamped with its start, for karaoke highlighting.

    Lines are those of the plain LRC (same breaks, same line times); a line
    reads ``[mm:ss.xx] <mm:ss.xx> word <mm:ss.xx> word ...``. Segments without
    word timestamps keep their plain ``[mm:ss.xx]text`` line, which A2 players
    show without per-word timing.
    """
    _check_limits(max_line_chars, 1)
    lines = []
    for segment in _segments(result):
        for time, text, words in _lrc_lines(segment, max_line_chars):
            if words:
                stamped = " ".join(f"<{_lrc_time(w.start)}> {w.text.strip()}" for w in words)
                lines.append(f"[{_lrc_time(time)}] {stamped}\n")
            else:
                lines.append(f"[{_lrc_time(time)}]{text}\n")
    return _lrc_header(result) + "".join(lines)


def openai_verbose_json(result: Mapping[str, Any], *, task: str = "transcribe") -> dict[str, Any]:
    """The body OpenAI's ``/v1/audio/transcriptions`` returns for ``verbose_json``.

    Clients written for OpenAI parse these exact keys, so every segment gets
    them all; fields faster-whisper does not keep in the stored result
    (``seek``, ``tokens``, ``temperature``, ``compression_ratio``) are taken
    from the segment when present, else given neutral values. ``words`` is
    present only when word timestamps were asked for (the flattened list, or
    the segments' words when only those were stored), as with OpenAI.
    """
    if task not in OPENAI_TASKS:
        raise ServiceError(
            f"task must be one of {', '.join(OPENAI_TASKS)}.", code="invalid_parameter", status=422
        )
    segments = _segments(result)
    text = result.get("text")
    if text is None:
        text = "".join(str(s.get("text") or "") for s in segments).strip()
    duration = result.get("duration")
    if duration is None:
        duration = max((float(s.get("end") or 0.0) for s in segments), default=0.0)
    body: dict[str, Any] = {
        "task": task,
        "language": language_name(result.get("language")),
        "duration": duration,
        "text": text,
        "segments": [
            {
                "id": segment.get("id", index),
                "seek": segment.get("seek", 0),
                "start": segment.get("start"),
                "end": segment.get("end"),
                "text": segment.get("text") or "",
                "tokens": list(segment.get("tokens") or []),
                "temperature": _or(segment.get("temperature"), 0.0),
                "avg_logprob": _or(segment.get("avg_logprob"), 0.0),
                "compression_ratio": _or(segment.get("compression_ratio"), 0.0),
                "no_speech_prob": _or(segment.get("no_speech_prob"), 0.0),
            }
            for index, segment in enumerate(segments)
        ],
    }
    words = result.get("words")
    if words is None and any(s.get("words") for s in segments):
        words = [w for s in segments for w in s.get("words") or []]
    if words is not None:
        body["words"] = [
            {"word": str(w.get("word") or "").strip(), "start": w.get("start"), "end": w.get("end")}
            for w in words
        ]
    return body


def language_name(code: str | None) -> str | None:
    """OpenAI's name for a Whisper language code (``en`` -> ``english``); others pass through."""
    if code is None:
        return None
    return LANGUAGE_NAMES.get(code.lower(), code)


# -- times --------------------------------------------------------------------


def _scaled(seconds: Any, scale: int) -> int:
    """``seconds`` in units of ``1/scale`` s, rounded half up on its decimal value."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return 0
    if not math.isfinite(value) or value <= 0:
        return 0
    return int((Decimal(repr(value)) * scale).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _clock(seconds: float, separator: str) -> str:
    """``HH:MM:SS<separator>mmm`` (SRT uses a comma, WebVTT a dot); hours may exceed 99."""
    hours, rest = divmod(_scaled(seconds, 1000), 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _lrc_time(seconds: float) -> str:
    """``mm:ss.xx``: LRC has no hours field, so minutes keep counting past 59."""
    minutes, rest = divmod(_scaled(seconds, 100), 6000)
    secs, centis = divmod(rest, 100)
    return f"{minutes:02d}:{secs:02d}.{centis:02d}"


def _lrc_header(result: Mapping[str, Any]) -> str:
    header = f"[by:{LRC_CREATOR}]\n"
    duration = result.get("duration")
    if isinstance(duration, int | float) and not isinstance(duration, bool):
        minutes, secs = divmod(_scaled(duration, 1), 60)
        header += f"[length:{minutes:02d}:{secs:02d}]\n"
    return header


# -- text ---------------------------------------------------------------------


def _segments(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return list(result.get("segments") or [])


def _one_line(text: Any) -> str:
    """A segment's text on one line: tabs and line breaks would break TSV rows and TXT lines."""
    return re.sub(r"[\t\r\n]", " ", str(text or "")).strip()


def _collapse(text: Any) -> str:
    return " ".join(str(text or "").split())


def _vtt_escape(text: str) -> str:
    """WebVTT cue text: ``-->`` ends nothing inside a cue, ``&`` and ``<`` start markup."""
    while "-->" in text:  # "--->" would give "-->" again after one pass
        text = text.replace("-->", "->")
    return text.replace("&", "&amp;").replace("<", "&lt;")


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def line_width(result: Mapping[str, Any], requested: int | None) -> int:
    """Characters per line to render ``result`` with: the request's, else 42,
    or for aligned lyrics (``lines`` beside ``segments``) the widest of their
    lines, so the author's lines are kept whole."""
    if requested is not None:
        return requested
    if "lines" in result and "segments" in result:
        longest = max((len(_collapse(s.get("text"))) for s in _segments(result)), default=0)
        return max(DEFAULT_LINE_CHARS, longest)
    return DEFAULT_LINE_CHARS


def _check_limits(max_line_chars: int, max_lines: int) -> None:
    if max_line_chars < 1 or max_lines < 1:
        raise ServiceError(
            "max_line_chars and max_lines must be at least 1.",
            code="invalid_parameter",
            status=422,
        )


# -- cues ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Unit:
    """A word as laid out: its text with the space before it, and its times when known."""

    text: str
    start: float = 0.0
    end: float = 0.0


@dataclass(frozen=True, slots=True)
class _Cue:
    start: float
    end: float
    lines: tuple[str, ...]


def _text_units(text: str) -> list[_Unit]:
    return [_Unit(token) for token in _TOKEN.findall(text)]


def _word_units(segment: Mapping[str, Any]) -> list[_Unit]:
    """The segment's timed words, or [] when any is missing a time (then times are shared out)."""
    units = []
    for word in segment.get("words") or []:
        text = str(word.get("word") or "")
        if not text.strip():
            continue
        start, end = word.get("start"), word.get("end")
        if start is None or end is None:
            return []
        units.append(_Unit(text, float(start), max(float(end), float(start))))
    return units


def _cut_long(units: Sequence[_Unit], limit: int) -> list[_Unit]:
    """Units no longer than a line; a longer word is cut, its time shared out by characters."""
    out = []
    for unit in units:
        token = unit.text.lstrip()
        if len(token) <= limit:
            out.append(unit)
            continue
        lead = unit.text[: len(unit.text) - len(token)]
        span = unit.end - unit.start
        for offset in range(0, len(token), limit):
            out.append(
                _Unit(
                    (lead if offset == 0 else "") + token[offset : offset + limit],
                    unit.start + span * offset / len(token),
                    unit.start + span * min(offset + limit, len(token)) / len(token),
                )
            )
    return out


def _line_text(units: Sequence[_Unit]) -> str:
    return _collapse("".join(unit.text for unit in units))


def _pack(units: Sequence[_Unit], limit: int, max_lines: int) -> list[list[list[_Unit]]]:
    """Greedy layout: cues of at most ``max_lines`` lines of at most ``limit`` characters."""
    cues: list[list[list[_Unit]]] = []
    lines: list[list[_Unit]] = []
    line: list[_Unit] = []
    for unit in units:
        if line and len(_line_text([*line, unit])) > limit:
            lines.append(line)
            line = []
            if len(lines) == max_lines:
                cues.append(lines)
                lines = []
        line.append(unit)
    if line:
        lines.append(line)
    if lines:
        cues.append(lines)
    return cues


def _cues(segment: Mapping[str, Any], limit: int, max_lines: int) -> list[_Cue]:
    """The subtitle cues of one segment (several when its text does not fit in one)."""
    start = float(segment.get("start") or 0.0)
    end = max(float(segment.get("end") or 0.0), start)
    text = _collapse(segment.get("text"))
    units = _cut_long(_text_units(text), limit)
    layout = _pack(units, limit, max_lines)
    if len(layout) <= 1:
        return [_Cue(start, end, tuple(_line_text(line) for line in cue)) for cue in layout]

    words = _word_units(segment)
    if words:
        layout = _pack(_cut_long(words, limit), limit, max_lines)
        cues = []
        for index, cue in enumerate(layout):
            cue_start = start if index == 0 else cue[0][0].start
            cue_end = end if index == len(layout) - 1 else cue[-1][-1].end
            lines = tuple(_line_text(line) for line in cue)
            cues.append(_Cue(cue_start, max(cue_end, cue_start), lines))
        return cues

    # No word times: each cue gets the share of the segment's time its
    # characters have in the text (a cue's share starts at the space before it).
    total = len(text)
    cues = []
    offset = 0
    for index, cue in enumerate(layout):
        size = sum(len(unit.text) for line in cue for unit in line)
        cue_start = start + (end - start) * offset / total
        offset += size
        cue_end = end if index == len(layout) - 1 else start + (end - start) * offset / total
        cues.append(_Cue(cue_start, cue_end, tuple(_line_text(line) for line in cue)))
    return cues


def _lrc_lines(
    segment: Mapping[str, Any], limit: int
) -> list[tuple[float, str, list[_Unit] | None]]:
    """``(time, text, words)`` per LRC line of one segment.

    A segment is one line at its start time, unless it is longer than
    ``limit`` and has word times: then it is broken like a subtitle (one text
    line per LRC line), each line at its first word's start, so a karaoke
    screen never shows more than a line's worth ahead of the singer.
    """
    text = _collapse(segment.get("text"))
    if not text:
        return []
    words = _word_units(segment)
    if words and len(text) > limit:
        return [
            (line[0].start, _line_text(line), line)
            for cue in _pack(_cut_long(words, limit), limit, 1)
            for line in cue
        ]
    return [(float(segment.get("start") or 0.0), text, words or None)]
