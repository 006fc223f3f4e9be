"""Transcript renderers, checked byte for byte against files written by hand.

The expected files in ``tests/data/transcripts/`` were written from the format
specs, not dumped from ``render``; how each time and line break was derived is
noted next to the segment below.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from app import transcripts
from app.errors import ServiceError
from app.transcripts import render, render_enhanced_lrc

DATA = Path(__file__).parent / "data" / "transcripts"


def words(*items: tuple[str, float, float]) -> list[dict[str, Any]]:
    return [{"start": s, "end": e, "word": w, "probability": 0.9} for w, s, e in items]


def segment(id_: int, start: float, end: float, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": id_,
        "start": start,
        "end": end,
        "text": text,
        "avg_logprob": -0.2,
        "no_speech_prob": 0.01,
        **extra,
    }


# Segment 1: 23 words, word i at 2.5 + 0.3 i for 0.25 s. Greedy 42-char lines:
# "The quick brown fox jumps over the lazy" (39, "+ dog" would be 43),
# "dog while the farmer watches from the" (37, "+ porch" 43), then
# "porch and the cat sleeps in the sun." (36): three lines, so two cues split
# before "porch": 2.5 -> 6.95 (end of word 14 "the"), 7.0 (start of "porch") -> 9.5.
QUICK = words(
    (" The", 2.5, 2.75), (" quick", 2.8, 3.05), (" brown", 3.1, 3.35), (" fox", 3.4, 3.65),
    (" jumps", 3.7, 3.95), (" over", 4.0, 4.25), (" the", 4.3, 4.55), (" lazy", 4.6, 4.85),
    (" dog", 4.9, 5.15), (" while", 5.2, 5.45), (" the", 5.5, 5.75), (" farmer", 5.8, 6.05),
    (" watches", 6.1, 6.35), (" from", 6.4, 6.65), (" the", 6.7, 6.95), (" porch", 7.0, 7.25),
    (" and", 7.3, 7.55), (" the", 7.6, 7.85), (" cat", 7.9, 8.15), (" sleeps", 8.2, 8.45),
    (" in", 8.5, 8.75), (" the", 8.8, 9.05), (" sun.", 9.1, 9.35),
)  # fmt: skip

# Segment 4: 55 characters, two lines in one cue ("... x --> y," is exactly 42);
# in LRC (one text line per LRC line) it breaks before "and" (word 14, 3730.35).
WATCH = words(
    (" Watch", 3728.25, 3728.35), (" out:", 3728.4, 3728.5), (" if", 3728.55, 3728.65),
    (" a", 3728.7, 3728.8), (" <", 3728.85, 3728.95), (" b", 3729.0, 3729.1),
    (" &", 3729.15, 3729.25), (" c", 3729.3, 3729.4), (" >", 3729.45, 3729.55),
    (" d,", 3729.6, 3729.7), (" then", 3729.75, 3729.85), (" x", 3729.9, 3730.0),
    (" -->", 3730.05, 3730.15), (" y,", 3730.2, 3730.3), (" and", 3730.35, 3730.45),
    (" y", 3730.5, 3730.6), (" <--", 3730.65, 3730.75), (" x.", 3730.8, 3730.9),
)  # fmt: skip

SEGMENTS = [
    segment(0, 0.0, 2.5, " Hello world.", words=words((" Hello", 0.0, 0.6), (" world.", 0.7, 1.2))),
    segment(
        1,
        2.5,
        9.5,
        " The quick brown fox jumps over the lazy dog while the farmer watches from the"
        " porch and the cat sleeps in the sun.",
        words=QUICK,
    ),
    # No words, 99 characters lasting 9.9 s. Lines "Ce ... des" (37) and
    # "croissants ... énorme" (38), then "pour tout le quartier." (22); the first
    # cue holds 37 + 1 + 38 = 76 characters: 10.0 + 9.9 * 76 / 99 = 17.6.
    segment(
        2,
        10.0,
        19.9,
        " Ce matin, la boulangère a préparé des croissants dorés et une brioche énorme"
        " pour tout le quartier.",
    ),
    # Over an hour; half-way times round up: 3725.005 s is 62:05.01 in LRC,
    # 3727.4995 s is 01:02:07,500.
    segment(3, 3725.005, 3727.4995, " こんにちは、世界！"),  # noqa: RUF001 (Japanese punctuation)
    segment(
        4, 3728.25, 3731.0, " Watch out: if a < b & c > d, then x --> y, and y <-- x.", words=WATCH
    ),
]

SAMPLE: dict[str, Any] = {
    "text": "".join(s["text"] for s in SEGMENTS).strip(),
    "language": "en",
    "language_probability": 0.99,
    "duration": 3735.0,  # [length:62:15]
    "segments": SEGMENTS,
    "words": [w for s in SEGMENTS for w in s.get("words", [])],
}


@pytest.mark.parametrize(
    ("fmt", "filename"),
    [
        ("srt", "sample.srt"),
        ("vtt", "sample.vtt"),
        ("txt", "sample.txt"),
        ("tsv", "sample.tsv"),
        ("lrc", "sample.lrc"),
    ],
)
def test_sample_matches_hand_written_file(fmt: str, filename: str) -> None:
    expected = (DATA / filename).read_bytes()
    assert render(SAMPLE, fmt).encode("utf-8") == expected


def test_enhanced_lrc_matches_hand_written_file() -> None:
    expected = (DATA / "sample.enhanced.lrc").read_bytes()
    assert render_enhanced_lrc(SAMPLE).encode("utf-8") == expected


def test_json_keeps_the_result_key_order_and_unicode() -> None:
    text = render(SAMPLE, "json")
    assert json.loads(text) == SAMPLE
    assert list(json.loads(text)) == list(SAMPLE)
    assert "こんにちは" in text and "boulangère" in text
    assert text.endswith("}\n")


EMPTY_EXPECTED = {
    "json": None,  # checked by parsing
    "txt": "",
    "srt": "",
    "vtt": "WEBVTT\n\n",
    "tsv": "start\tend\ttext\n",
    "lrc": "[by:AiMusicSeparator]\n[length:00:00]\n",
}


@pytest.mark.parametrize("fmt", transcripts.FORMATS)
def test_empty_result_renders_an_empty_document(fmt: str) -> None:
    empty = {"text": "", "language": "en", "duration": 0.0, "segments": []}
    out = render(empty, fmt)
    if fmt == "json":
        assert json.loads(out) == empty
    else:
        assert out == EMPTY_EXPECTED[fmt]
    # A result with nothing in it at all (no duration) is not a crash either.
    bare = render({}, fmt)
    if fmt == "lrc":
        assert bare == "[by:AiMusicSeparator]\n"
    elif fmt == "json":
        assert bare == "{}\n"
    else:
        assert bare == EMPTY_EXPECTED[fmt]


def test_empty_result_enhanced_lrc() -> None:
    assert render_enhanced_lrc({"segments": []}) == "[by:AiMusicSeparator]\n"


def test_blank_segments_are_left_out() -> None:
    result = {
        "segments": [
            segment(0, 0.0, 1.0, "  "),
            segment(1, 1.0, 2.0, " Yes.", words=words((" ", 1.0, 1.1))),
        ]
    }
    assert render(result, "srt") == "1\n00:00:01,000 --> 00:00:02,000\nYes.\n"
    assert render(result, "txt") == "Yes.\n"
    assert render(result, "tsv") == "start\tend\ttext\n1000\t2000\tYes.\n"
    assert render(result, "lrc") == "[by:AiMusicSeparator]\n[00:01.00]Yes.\n"
    # Its only "word" is blank: the plain line, no empty <..> stamp.
    assert render_enhanced_lrc(result) == "[by:AiMusicSeparator]\n[00:01.00]Yes.\n"


def test_segment_without_words_key_or_with_none() -> None:
    result = {"segments": [segment(0, 0.0, 1.0, " A", words=None), segment(1, 1.0, 2.0, " B")]}
    assert render_enhanced_lrc(result) == "[by:AiMusicSeparator]\n[00:00.00]A\n[00:01.00]B\n"


@pytest.mark.parametrize(
    ("seconds", "srt", "vtt", "lrc", "tsv"),
    [
        (0.0, "00:00:00,000", "00:00:00.000", "00:00.00", "0"),
        (-0.2, "00:00:00,000", "00:00:00.000", "00:00.00", "0"),
        (1.0005, "00:00:01,001", "00:00:01.001", "00:01.00", "1001"),
        (59.9996, "00:01:00,000", "00:01:00.000", "01:00.00", "60000"),
        (4503.195, "01:15:03,195", "01:15:03.195", "75:03.20", "4503195"),
        (4503.2, "01:15:03,200", "01:15:03.200", "75:03.20", "4503200"),
        (362439.5, "100:40:39,500", "100:40:39.500", "6040:39.50", "362439500"),
    ],
)
def test_timestamps(seconds: float, srt: str, vtt: str, lrc: str, tsv: str) -> None:
    result = {"segments": [segment(0, seconds, seconds, " x")]}
    assert render(result, "srt").splitlines()[1] == f"{srt} --> {srt}"
    assert render(result, "vtt").splitlines()[2] == f"{vtt} --> {vtt}"
    assert render(result, "lrc").splitlines()[1] == f"[{lrc}]x"
    assert render(result, "tsv").splitlines()[1] == f"{tsv}\t{tsv}\tx"


def test_lrc_length_header_rounds_to_the_second() -> None:
    assert render({"duration": 7.5, "segments": []}, "lrc").endswith("[length:00:08]\n")
    assert render({"duration": 4503.2, "segments": []}, "lrc").endswith("[length:75:03]\n")


def test_vtt_escapes_cue_text_and_nothing_else_does() -> None:
    result = {"segments": [segment(0, 0.0, 1.0, " a ---> b & <i>c</i> --> d")]}
    assert render(result, "vtt").splitlines()[3] == "a -> b &amp; &lt;i>c&lt;/i> -> d"
    assert render(result, "srt").splitlines()[2] == "a ---> b & <i>c</i> --> d"
    assert render(result, "txt") == "a ---> b & <i>c</i> --> d\n"
    assert render(result, "lrc").splitlines()[1] == "[00:00.00]a ---> b & <i>c</i> --> d"


def test_tabs_and_newlines_do_not_break_rows_or_cues() -> None:
    result = {"segments": [segment(0, 0.0, 1.0, " one\ttwo\nthree")]}
    assert render(result, "tsv").splitlines()[1] == "0\t1000\tone two three"
    assert render(result, "txt") == "one two three\n"
    assert render(result, "srt").splitlines()[2] == "one two three"


def test_max_lines_and_max_line_chars_are_parameters() -> None:
    result = {"segments": [segment(0, 0.0, 3.0, " aaa bbb ccc")]}
    # One 7-character line per cue: "aaa bbb" is 7 of 11 characters: 3 * 7 / 11.
    assert render(result, "srt", max_line_chars=7, max_lines=1) == (
        "1\n00:00:00,000 --> 00:00:01,909\naaa bbb\n\n2\n00:00:01,909 --> 00:00:03,000\nccc\n"
    )
    assert render(result, "srt", max_line_chars=7, max_lines=2) == (
        "1\n00:00:00,000 --> 00:00:03,000\naaa bbb\nccc\n"
    )


def test_word_longer_than_a_line_is_cut() -> None:
    text = "あ" * 25
    result = {"segments": [segment(0, 0.0, 5.0, text)]}
    # 10-character lines, 2 per cue: 20 characters (4 s), then 5 (1 s).
    assert render(result, "srt", max_line_chars=10) == (
        f"1\n00:00:00,000 --> 00:00:04,000\n{'あ' * 10}\n{'あ' * 10}\n\n"
        f"2\n00:00:04,000 --> 00:00:05,000\n{'あ' * 5}\n"
    )


def cue_texts(srt: str) -> list[list[str]]:
    return [block.split("\n")[2:] for block in srt.rstrip("\n").split("\n\n")]


@pytest.mark.parametrize("max_line_chars", [5, 12, 20, 42])
@pytest.mark.parametrize("max_lines", [1, 2, 3])
@pytest.mark.parametrize("with_words", [True, False])
def test_splitting_keeps_every_word_in_order_within_limits(
    max_line_chars: int, max_lines: int, with_words: bool
) -> None:
    tokens = [" The", " quick", " brown", " extraordinarily", " fox", " é", " 日本語", " jumps."]
    tokens = tokens * 4
    items = [(t, 1.0 + i * 0.5, 1.0 + i * 0.5 + 0.4) for i, t in enumerate(tokens)]
    seg = segment(0, 1.0, 1.0 + len(tokens) * 0.5, "".join(tokens))
    if with_words:
        seg["words"] = words(*items)
    srt = render({"segments": [seg]}, "srt", max_line_chars=max_line_chars, max_lines=max_lines)
    cues = cue_texts(srt)
    lines = [line for cue in cues for line in cue]
    assert all(len(line) <= max_line_chars for line in lines)
    assert all(1 <= len(cue) <= max_lines for cue in cues)
    assert " ".join(lines).replace(" ", "") == "".join(tokens).replace(" ", "")
    if max_line_chars >= len("extraordinarily"):  # no word cut: words stay whole
        assert " ".join(lines).split() == "".join(tokens).split()
    times = re.findall(r"(\d\d:\d\d:\d\d,\d\d\d) --> (\d\d:\d\d:\d\d,\d\d\d)", srt)
    flat = [t for pair in times for t in pair]
    assert flat == sorted(flat)
    assert flat[0] == "00:00:01,000" and flat[-1] == "00:00:17,000"


def test_word_split_uses_word_times() -> None:
    seg = segment(0, 0.2, 4.0, " aaaa bbbb cccc", words=words(
        (" aaaa", 0.5, 1.0), (" bbbb", 1.5, 2.0), (" cccc", 2.5, 3.0)
    ))  # fmt: skip
    srt = render({"segments": [seg]}, "srt", max_line_chars=9, max_lines=1)
    assert srt == (
        "1\n00:00:00,200 --> 00:00:02,000\naaaa bbbb\n\n2\n00:00:02,500 --> 00:00:04,000\ncccc\n"
    )


def test_unknown_format_is_a_client_error() -> None:
    with pytest.raises(ServiceError) as info:
        render(SAMPLE, "docx")
    assert info.value.status == 422
    assert info.value.code == "invalid_parameter"
    with pytest.raises(ServiceError):
        render(SAMPLE, "srt", max_line_chars=0)


def test_format_tables_cover_every_format() -> None:
    assert set(transcripts.CONTENT_TYPES) == set(transcripts.FORMATS)
    assert set(transcripts.EXTENSIONS) == set(transcripts.FORMATS)
    assert transcripts.CONTENT_TYPES["vtt"] == "text/vtt; charset=utf-8"
    assert transcripts.CONTENT_TYPES["srt"] == "application/x-subrip; charset=utf-8"
    assert transcripts.CONTENT_TYPES["json"] == "application/json"


def test_openai_verbose_json_shape() -> None:
    body = transcripts.openai_verbose_json(SAMPLE)
    assert list(body) == ["task", "language", "duration", "text", "segments", "words"]
    assert body["task"] == "transcribe"
    assert body["language"] == "english"
    assert body["duration"] == 3735.0
    assert body["text"] == SAMPLE["text"]
    assert len(body["segments"]) == len(SEGMENTS)
    first = body["segments"][0]
    assert first == {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": 2.5,
        "text": " Hello world.",
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": -0.2,
        "compression_ratio": 0.0,
        "no_speech_prob": 0.01,
    }
    assert body["words"][:2] == [
        {"word": "Hello", "start": 0.0, "end": 0.6},
        {"word": "world.", "start": 0.7, "end": 1.2},
    ]
    assert len(body["words"]) == len(SAMPLE["words"])
    json.dumps(body)  # serialisable as is


def test_openai_verbose_json_variants() -> None:
    no_words = {
        "text": "Hi",
        "language": "xx",
        "duration": 1.0,
        "segments": [segment(0, 0, 1, " Hi")],
    }
    body = transcripts.openai_verbose_json(no_words, task="translate")
    assert body["task"] == "translate"
    assert body["language"] == "xx"  # unknown codes pass through
    assert "words" not in body
    # Words only on segments: flattened.
    only_segment_words = {"segments": [SEGMENTS[0]], "language": "ja"}
    body = transcripts.openai_verbose_json(only_segment_words)
    assert body["language"] == "japanese"
    assert [w["word"] for w in body["words"]] == ["Hello", "world."]
    assert body["text"] == "Hello world."
    assert body["duration"] == 2.5
    # Values faster-whisper keeps are used.
    seg = segment(0, 0, 1, " Hi", seek=300, tokens=[1, 2], temperature=0.2, compression_ratio=1.3)
    out = transcripts.openai_verbose_json({"segments": [seg]})["segments"][0]
    assert (out["seek"], out["tokens"], out["temperature"], out["compression_ratio"]) == (
        300, [1, 2], 0.2, 1.3,
    )  # fmt: skip
    empty = transcripts.openai_verbose_json({"text": "", "segments": []})
    assert empty["segments"] == [] and empty["duration"] == 0.0 and "words" not in empty
    with pytest.raises(ServiceError):
        transcripts.openai_verbose_json(SAMPLE, task="summarise")


def test_language_names_cover_whisper_languages() -> None:
    tokenizer = pytest.importorskip("faster_whisper.tokenizer")
    assert set(tokenizer._LANGUAGE_CODES) <= set(transcripts.LANGUAGE_NAMES)
    assert transcripts.language_name("EN") == "english"
    assert transcripts.language_name(None) is None
