"""Lyrics a user supplies, to be aligned to a song: parsed, checked and normalised.

Plain text has one sung line per line; blank lines separate sections. An LRC
file (``[mm:ss.xx]`` line tags, ``<mm:ss.xx>`` word tags of enhanced LRC,
``[ar:...]`` metadata lines) is accepted too and re-timed: its tags are
dropped, and a line stamped with several times (a chorus written once) is
repeated at each of them, in time order. Whole-line headers such as
``[Chorus]`` are not sung and only break sections.

Words are split on whitespace and keep the user's spelling for output. For
matching against what a recogniser hears, each word also has a normalised
form: a list of lower-case tokens without punctuation, numbers spelled out
("2" -> ["two"], "1999" -> ["nineteen", "ninety", "nine"]), hyphenated words
split, contractions kept ("don't"). Pure functions; nothing here reads audio.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

MAX_BYTES = 1_000_000
MAX_LINES = 1_000
MAX_WORDS = 5_000


class LyricsError(ValueError):
    """Lyrics that cannot be aligned; the message says why, for the user."""


@dataclass(frozen=True)
class LyricWord:
    text: str  # as the user wrote it, punctuation included
    norm: tuple[str, ...]  # normalised tokens for matching (never empty)
    line: int  # index of its line
    index: int  # index among all words


@dataclass(frozen=True)
class LyricLine:
    text: str  # the user's line, tags removed
    words: tuple[LyricWord, ...]
    section: int  # sections are separated by blank lines (or headers)


@dataclass(frozen=True)
class Lyrics:
    lines: tuple[LyricLine, ...]
    lrc: bool = False  # the input was LRC (its timestamps were dropped)
    metadata: dict[str, str] = field(default_factory=dict)  # LRC [ar:], [ti:], ...

    @property
    def words(self) -> list[LyricWord]:
        return [word for line in self.lines for word in line.words]


# --------------------------------------------------------------------------- numbers

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_ORDINAL = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}


def number_words(value: int) -> list[str]:
    """English words for 0-100, and four-digit years the way they are sung
    ("1999": nineteen ninety nine, "2005": two thousand five, "1900": nineteen
    hundred); other numbers digit by digit."""
    if value < 20:
        return [_ONES[value]]
    if value < 100:
        tens, ones = divmod(value, 10)
        return [_TENS[tens]] + ([_ONES[ones]] if ones else [])
    if value == 100:
        return ["one", "hundred"]
    if value % 1000 == 0 and value < 10000:
        return [_ONES[value // 1000], "thousand"]
    if 1000 <= value <= 2099:
        high, low = divmod(value, 100)
        if 2000 <= value <= 2009:
            return ["two", "thousand"] + (number_words(low) if low else [])
        if low == 0:
            return [*number_words(high), "hundred"]
        return number_words(high) + (["oh"] if low < 10 else []) + number_words(low)
    return [_ONES[int(d)] for d in str(value)]


def _ordinal(words: list[str]) -> list[str]:
    last = words[-1]
    if last in _ORDINAL:
        last = _ORDINAL[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return [*words[:-1], last]


# --------------------------------------------------------------------------- normalising

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
_DASHES = re.compile(r"[-\u2010-\u2015/]+")
_SYMBOLS = {"&": "and", "%": "percent", "+": "plus", "@": "at"}
_NUMBER = re.compile(r"^(\d+)(st|nd|rd|th|s|'s)?$")


def normalise(word: str) -> tuple[str, ...]:
    """The tokens a word is matched by: lower case, no punctuation, numbers
    spelled out, hyphens splitting. Empty for punctuation alone."""
    text = unicodedata.normalize("NFKC", word).translate(_APOSTROPHES).lower()
    for symbol, name in _SYMBOLS.items():
        text = text.replace(symbol, f" {name} ")
    text = _DASHES.sub(" ", text)
    tokens: list[str] = []
    for part in text.split():
        part = "".join(c for c in part if c.isalnum() or c == "'").strip("'")
        if not part:
            continue
        match = _NUMBER.match(part)
        if match and len(match.group(1)) <= 4:
            spelled = number_words(int(match.group(1)))
            suffix = match.group(2)
            if suffix in ("st", "nd", "rd", "th"):
                spelled = _ordinal(spelled)
            elif suffix in ("s", "'s"):  # the 90s, 1960s
                last = spelled[-1]
                spelled = [*spelled[:-1], last[:-1] + "ies" if last.endswith("y") else last + "s"]
            tokens.extend(spelled)
        elif any(c.isdigit() for c in part):
            # Digits mixed with letters ("4ever", "24/7" split above): spell the digits.
            for piece in re.findall(r"\d+|[^\d]+", part):
                tokens.extend(
                    number_words(int(piece)) if piece.isdigit() and len(piece) <= 4 else [piece]
                )
        else:
            tokens.append(part)
    return tuple(tokens)


# --------------------------------------------------------------------------- parsing

_LINE_TAG = re.compile(r"\[\s*(\d{1,3})\s*:\s*(\d{1,2}(?:[.:]\d{1,3})?)\s*\]")
_WORD_TAG = re.compile(r"<\s*\d{1,3}\s*:\s*\d{1,2}(?:[.:]\d{1,3})?\s*>")
_METADATA = re.compile(r"^\[\s*([A-Za-z#][A-Za-z#_-]*)\s*:(.*)\]$")
_HEADER = re.compile(r"^\[[^\]]*\]$")  # [Chorus], [Verse 2: Someone]
# Control characters other than tab, line feed, form feed and carriage return
# mean the data is not lyrics text.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _decode(data: bytes | str, max_bytes: int) -> str:
    size = len(data.encode("utf-8", "surrogatepass")) if isinstance(data, str) else len(data)
    if size > max_bytes:
        raise LyricsError(f"The lyrics are {size} bytes; at most {max_bytes} are accepted.")
    if isinstance(data, bytes):
        if b"\x00" in data:
            raise LyricsError("The lyrics look like binary data, not text.")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise LyricsError("The lyrics are not UTF-8 text.") from None
    else:
        text = data.removeprefix("\ufeff")
    if _CONTROL.search(text):
        raise LyricsError(
            "The lyrics contain control characters: they look like binary data, not text."
        )
    return text


def _seconds(minutes: str, seconds: str) -> float:
    return int(minutes) * 60 + float(seconds.replace(":", "."))


def _lrc_lines(raw: list[str], metadata: dict[str, str]) -> list[str]:
    """LRC lines in time order without their tags; a line with several time
    tags is repeated at each; untimed lines follow the line before them;
    an empty timed line (an LRC 'end of line' mark) becomes a blank line."""
    timed: list[tuple[float, int, str]] = []
    last = 0.0
    for order, line in enumerate(raw):
        stripped = line.strip()
        meta = _METADATA.match(stripped)
        if meta and not _LINE_TAG.match(stripped):
            metadata[meta.group(1).lower()] = meta.group(2).strip()
            continue
        times = []
        rest = stripped
        while True:
            tag = _LINE_TAG.match(rest)
            if not tag:
                break
            times.append(_seconds(tag.group(1), tag.group(2)))
            rest = rest[tag.end() :].lstrip()
        rest = " ".join(_WORD_TAG.sub(" ", rest).split())
        if not times:
            times = [last]
        last = times[-1]
        timed.extend((t, order, rest) for t in times)
    timed.sort(key=lambda item: (item[0], item[1]))
    return [text for _t, _o, text in timed]


def is_lrc(text: str) -> bool:
    """Whether any line starts with an LRC time tag."""
    return any(_LINE_TAG.match(line.strip()) for line in text.splitlines())


def parse_lyrics(
    data: bytes | str,
    *,
    max_bytes: int = MAX_BYTES,
    max_lines: int = MAX_LINES,
    max_words: int = MAX_WORDS,
) -> Lyrics:
    """Lyrics from plain text or LRC; raises ``LyricsError`` with a message
    for the user when they are empty, not text, without words, or too long."""
    text = _decode(data, max_bytes)
    if not text.strip():
        raise LyricsError("The lyrics are empty.")
    raw = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n").split("\n")
    metadata: dict[str, str] = {}
    lrc = is_lrc(text)
    if lrc:
        raw = _lrc_lines(raw, metadata)
    lines: list[LyricLine] = []
    words_total = 0
    section = 0
    for line in raw:
        line = " ".join(_WORD_TAG.sub(" ", line).split())
        if not line or _HEADER.match(line):
            if lines and lines[-1].section == section:
                section += 1
            continue
        words: list[LyricWord] = []
        for token in line.split():
            norm = normalise(token)
            if norm:
                words.append(LyricWord(token, norm, len(lines), words_total + len(words)))
        if not words:  # punctuation alone ("...", "~"): not sung words
            continue
        words_total += len(words)
        if words_total > max_words:
            raise LyricsError(f"The lyrics have more than {max_words} words; that is the limit.")
        lines.append(LyricLine(line, tuple(words), section))
        if len(lines) > max_lines:
            raise LyricsError(f"The lyrics have more than {max_lines} lines; that is the limit.")
    if not lines:
        raise LyricsError("The lyrics contain no words.")
    return Lyrics(tuple(lines), lrc, metadata)
