"""Karaoke packages: line building, lyric files, ID3 frames and the whole pipeline."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.lyrics import build_lines
from tests.support.apps import register_and_login
from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.speech import REFERENCES, SPEECH, words_of


class NullProgress:
    """Progress that goes nowhere: a service function called outside a job."""

    def __call__(self, progress: float, stage: str | None = None, *, force: bool = False) -> None:
        pass

    def stage(self, stage: str, progress: float | None = None) -> None:
        pass


LRC_LINE = re.compile(r"^\[(\d\d):(\d\d)\.(\d\d)\](.*)$")
SRT_TIME = re.compile(r"^\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}$")
VTT_TIME = re.compile(r"^\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}$")


def _w(word: str, start: float, end: float) -> dict:
    return {"word": f" {word}", "start": start, "end": end, "probability": 0.9}


def test_lines_break_at_pauses_punctuation_and_length() -> None:
    words = [
        _w("Hello", 0.0, 0.4), _w("there,", 0.5, 0.9), _w("my", 1.0, 1.1), _w("friend.", 1.2, 1.6),
        _w("How", 1.7, 1.9), _w("are", 2.0, 2.1), _w("you", 2.2, 2.4),
        _w("after", 4.0, 4.3), _w("the", 4.4, 4.5), _w("long", 4.6, 4.8), _w("pause", 4.9, 5.3),
    ]  # fmt: skip
    lines = build_lines(words, max_chars=42)
    assert [line.text for line in lines] == [
        "Hello there, my friend.",
        "How are you",
        "after the long pause",
    ]
    assert (lines[1].start, lines[1].end) == (1.7, 2.4)
    long = [_w(f"word{i}", i * 0.3, i * 0.3 + 0.25) for i in range(40)]
    lines = build_lines(long, max_chars=30)
    assert all(len(line.text) <= 30 for line in lines)
    assert " ".join(line.text for line in lines) == " ".join(f"word{i}" for i in range(40))
    assert build_lines([]) == []


def _check_lrc(text: str, duration: float) -> list[float]:
    times = []
    for line in text.splitlines():
        if line.startswith(("[by:", "[length:")):
            continue
        match = LRC_LINE.match(line)
        assert match, line
        seconds = int(match[1]) * 60 + int(match[2]) + int(match[3]) / 100
        assert 0 <= seconds <= duration + 0.05
        times.append(seconds)
    assert times == sorted(times)
    return times


def _check_srt(text: str) -> None:
    if not text.strip():
        return
    for number, cue in enumerate(text.strip().split("\n\n"), 1):
        lines = cue.splitlines()
        assert lines[0] == str(number) and SRT_TIME.match(lines[1]) and lines[2:], cue


def _check_vtt(text: str) -> None:
    assert text.startswith("WEBVTT\n")
    for cue in text.strip().split("\n\n")[1:]:
        assert VTT_TIME.match(cue.splitlines()[0]), cue


def _sylt_times(path: Path) -> tuple[list[tuple[str, int]], str]:
    from mutagen.id3 import ID3

    tags = ID3(path)
    sylt = tags.getall("SYLT")
    uslt = tags.getall("USLT")
    if not sylt:  # no lyrics, no frames
        assert not uslt
        return [], ""
    assert len(sylt) == 1 and len(uslt) == 1
    return list(sylt[0].text), str(uslt[0].text)


def test_lyric_files_from_a_real_transcription(app: Flask, tmp_path: Path) -> None:
    """Speech clip -> Whisper words -> lines -> every lyrics format, timed inside the clip."""
    from app import audio
    from app.lyrics import embed_in_mp3
    from app.services import karaoke, transcription
    from tests.support.audio import SR

    name = "clip2.flac"
    with app.app_context():
        result, _ = transcription.transcribe_file(
            SPEECH / name, "tiny.en", {"word_timestamps": True, "vad_filter": True},
            NullProgress(),
        )  # fmt: skip
    duration = audio.probe(SPEECH / name).duration
    lines = karaoke.package_lyrics(
        tmp_path, result["words"], language="en", duration=duration, max_line_chars=32
    )
    sung = words_of(" ".join(line.text for line in lines))
    for word in words_of(REFERENCES[name]):
        assert word in sung
    assert all(len(line.text) <= 32 for line in lines) and len(lines) >= 2

    times = _check_lrc((tmp_path / "lyrics.lrc").read_text(), duration)
    assert len(times) == len(lines)
    enhanced = (tmp_path / "lyrics.words.lrc").read_text()
    assert len(re.findall(r"<\d\d:\d\d\.\d\d>", enhanced)) == len(sung)
    _check_srt((tmp_path / "lyrics.srt").read_text())
    _check_vtt((tmp_path / "lyrics.vtt").read_text())
    sync = json.loads((tmp_path / "sync.json").read_text())
    assert [line["text"] for line in sync["lines"]] == [line.text for line in lines]
    all_words = [w for line in sync["lines"] for w in line["words"]]
    assert all(0 <= w["start"] <= w["end"] <= duration + 0.05 for w in all_words)

    mp3 = tmp_path / "song.mp3"
    audio.encode(sine_and_clicks(seconds=duration), SR, mp3, format="mp3")
    embed_in_mp3(mp3, lines, language="en", title="Kitchen", artist="Tester")
    entries, plain = _sylt_times(mp3)
    stamps = [ms for _, ms in entries]
    assert stamps == sorted(stamps) and stamps[-1] <= duration * 1000
    assert [text for text, _ in entries] == [line.text for line in lines]
    assert plain.splitlines() == [line.text for line in lines]
    assert audio.read_tags(mp3) == {"title": "Kitchen", "artist": "Tester"}
    assert audio.probe(mp3).duration == pytest.approx(duration, abs=0.1)  # still plays


def _karaoke(client: FlaskClient, headers: dict, data: bytes, name: str, **form) -> dict:
    payload = {"file": (io.BytesIO(data), name), **{k: str(v) for k, v in form.items()}}
    response = client.post(
        "/api/v1/karaoke", data=payload, headers=headers, content_type="multipart/form-data"
    )
    assert response.status_code == 202, response.json
    return client.get(response.headers["Location"], headers=headers).json


def test_karaoke_pipeline(demucs_app: Flask, progress_log: list) -> None:
    seen = progress_log
    client = demucs_app.test_client()
    headers = register_and_login(client)
    job = _karaoke(
        client, headers, (SPEECH / "clip5.wav").read_bytes(), "clip5.wav",
        separation_model="mdx", output_format="flac",
    )  # fmt: skip
    assert job["status"] == "succeeded", job
    result = job["result"]
    names = [f["name"] for f in result["files"]]
    assert names == [
        "instrumental.flac", "vocals.flac", "instrumental.mp3", "lyrics.lrc",
        "lyrics.words.lrc", "lyrics.srt", "lyrics.vtt", "sync.json",
    ]  # fmt: skip
    assert result["has_vocals"] == bool(result["lines"])
    duration = job["input"]["duration"]
    files = {f["name"]: client.get(f["url"], headers=headers) for f in result["files"]}
    assert all(r.status_code == 200 for r in files.values())
    _check_lrc(files["lyrics.lrc"].text, duration)
    _check_lrc(files["lyrics.words.lrc"].text, duration)
    _check_srt(files["lyrics.srt"].text)
    _check_vtt(files["lyrics.vtt"].text)
    assert files["sync.json"].json["duration"] == pytest.approx(duration, abs=0.01)
    stem = next(f for f in result["files"] if f["name"] == "instrumental.flac")
    assert stem["sample_rate"] == 44100 and stem["duration"] == pytest.approx(duration, abs=0.01)

    mp3 = Path(demucs_app.config["DATA_DIR"]) / "mp3-check.mp3"
    mp3.write_bytes(files["instrumental.mp3"].data)
    entries, _plain = _sylt_times(mp3)
    assert [t for t, _ in entries] == [line["text"] for line in result["lines"]]

    values = [p for p, _ in seen]
    assert values == sorted(values) and values[-1] == 1.0
    stages = [s for _, s in seen if s]
    assert stages.index("separating") < stages.index("transcribing") < stages.index("packaging")


def test_a_song_without_vocals_has_empty_lyrics(demucs_app: Flask) -> None:
    client = demucs_app.test_client()
    headers = register_and_login(client)
    silent_vocals = wav_bytes(0.0 * sine_and_clicks(seconds=3.0))
    job = _karaoke(client, headers, silent_vocals, "quiet.wav", separation_model="mdx")
    assert job["status"] == "succeeded", job
    assert job["result"]["has_vocals"] is False
    assert job["result"]["lyrics"] == "" and job["result"]["lines"] == []
    lrc = next(f for f in job["result"]["files"] if f["name"] == "lyrics.lrc")
    body = client.get(lrc["url"], headers=headers).text
    assert body.startswith("[by:AiMusicSeparator]")


def test_karaoke_options_are_validated(demucs_app: Flask) -> None:
    client = demucs_app.test_client()
    headers = register_and_login(client)
    song = wav_bytes(sine_and_clicks(seconds=1.0))
    for field, value in (
        ("separation_model", "hpss"),  # no vocals stem
        ("whisper_model", "nope"),
        ("language", "de"),  # tiny.en is English-only
        ("output_format", "ogg"),
        ("max_line_chars", "5"),
    ):
        response = client.post(
            "/api/v1/karaoke",
            data={"file": (io.BytesIO(song), "s.wav"), field: value},
            headers=headers,
            content_type="multipart/form-data",
        )
        assert response.status_code == 422, (field, response.json)
        assert field in response.json["errors"]


def test_title_and_artist_are_carried_over(demucs_app: Flask, tmp_path: Path) -> None:
    import av
    from mutagen.id3 import ID3

    from tests.support.audio import SR

    path = tmp_path / "tagged.mp3"
    with av.open(str(path), "w") as out:
        out.metadata["title"] = "Rain Song"
        out.metadata["artist"] = "The Testers"
        stream = out.add_stream("mp3", rate=SR)
        stream.layout = "stereo"
        signal = sine_and_clicks(seconds=2.0)
        for start in range(0, signal.shape[1], 1152):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(signal[:, start : start + 1152]),
                format="fltp",
                layout="stereo",
            )
            frame.sample_rate = SR
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    client = demucs_app.test_client()
    headers = register_and_login(client)
    job = _karaoke(client, headers, path.read_bytes(), "tagged.mp3", separation_model="mdx")
    assert job["status"] == "succeeded", job
    assert job["result"]["tags"] == {"title": "Rain Song", "artist": "The Testers"}
    entry = next(f for f in job["result"]["files"] if f["name"] == "instrumental.mp3")
    mp3 = tmp_path / "out.mp3"
    mp3.write_bytes(client.get(entry["url"], headers=headers).data)
    tags = ID3(mp3)
    assert str(tags["TIT2"]) == "Rain Song" and str(tags["TPE1"]) == "The Testers"
