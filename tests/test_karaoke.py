"""Karaoke packages: line building, lyric files, ID3 frames and the whole pipeline."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
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


@pytest.mark.parametrize("decoding", ["sequential", "batched"])
def test_lyric_files_from_a_real_transcription(app: Flask, tmp_path: Path, decoding: str) -> None:
    """Speech clip -> Whisper words -> lines -> every lyrics format, timed inside
    the clip; a song long enough is transcribed batched (``decoding=auto``)."""
    from app import audio
    from app.lyrics import embed_in_mp3
    from app.services import karaoke, transcription
    from tests.support.audio import SR

    name = "clip2.flac"
    with app.app_context():
        result, _ = transcription.transcribe_file(
            SPEECH / name, "tiny.en",
            {"word_timestamps": True, "vad_filter": True, "decoding": decoding},
            NullProgress(),
        )  # fmt: skip
    assert result.pop("metrics")["decoding"] == decoding
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


# ------------------------------------------------ the default separation model

MEL = "mel_band_roformer_kim"
BS = "bs_roformer_viperx_1297"


@pytest.fixture
def no_hub_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Demucs weights in this machine's Hugging Face cache would count as
    available: the tests see only their MODELS_DIR."""
    from app.models import demucs_engine

    monkeypatch.setattr(demucs_engine, "_in_hub_cache", lambda name: False)


def _vocals_default(client: FlaskClient) -> dict:
    return client.get("/api/v1/models").json["vocals_default"]


def _stem(client: FlaskClient, headers: dict, job: dict, name: str) -> np.ndarray:
    import soundfile as sf

    entry = next(f for f in job["result"]["files"] if f["name"] == name)
    data, _ = sf.read(io.BytesIO(client.get(entry["url"], headers=headers).data), always_2d=True)
    return data.T


@pytest.mark.usefixtures("no_hub_cache")
def test_karaoke_defaults_to_the_best_vocals_model(
    eager_app: Callable[..., Flask], vocal_models_dir: Path
) -> None:
    """With both tiny RoFormers and the Demucs repo here, a karaoke job that
    names no model runs mel_band_roformer_kim (the highest Multisong vocals
    SDR), and its instrumental is the mix minus its vocals."""
    app = eager_app(MODELS_DIR=str(vocal_models_dir), ALLOW_MODEL_DOWNLOAD=False)
    client = app.test_client()
    headers = register_and_login(client)
    listed = _vocals_default(client)
    assert (listed["model"], listed["how"]) == (MEL, "best")
    assert listed["benchmark"] == "Multisong (MVSep)"
    ranking = [(r["model"], r["sdr_db"], r["ready"]) for r in listed["ranking"]]
    assert ranking[:5] == [
        (MEL, 10.98, True), (BS, 10.87, True), ("mdx23c_vocals_zfturbo", 10.17, False),
        ("htdemucs_ft", 8.38, False), ("htdemucs", 8.24, True),
    ]  # fmt: skip
    assert [r["sdr_db"] for r in listed["ranking"]] == sorted(
        (r["sdr_db"] for r in listed["ranking"]), reverse=True
    )
    assert {"hpss", "mdx", "mybag"}.isdisjoint(r["model"] for r in listed["ranking"])

    mix = 0.5 * sine_and_clicks(seconds=1.3)
    job = _karaoke(
        client, headers, wav_bytes(mix, subtype="FLOAT"), "song.wav",
        output_format="wav", bit_depth="32f",
    )  # fmt: skip
    assert job["status"] == "succeeded", job
    assert job["model"] == MEL and job["params"]["separation_model"] == MEL
    choice = job["params"]["separation_model_choice"]
    assert choice["how"] == "best" and choice["reason"].startswith("default: ")
    assert "10.98 dB" in choice["reason"]
    names = [f["name"] for f in job["result"]["files"]]
    assert names[:3] == ["instrumental.wav", "vocals.wav", "instrumental.mp3"]
    vocals = _stem(client, headers, job, "vocals.wav")
    instrumental = _stem(client, headers, job, "instrumental.wav")
    assert vocals.shape == instrumental.shape == mix.shape
    assert np.max(np.abs(vocals)) > 0
    assert np.max(np.abs(vocals + instrumental - mix)) < 1e-4


@pytest.mark.usefixtures("no_hub_cache")
def test_karaoke_falls_back_to_htdemucs_without_roformer_weights(demucs_app: Flask) -> None:
    """No RoFormer weights, downloads off: the best ready model is htdemucs (the
    tiny repo has it, not htdemucs_ft), and the job says why."""
    client = demucs_app.test_client()
    headers = register_and_login(client)
    listed = _vocals_default(client)
    assert (listed["model"], listed["how"]) == ("htdemucs", "fallback")
    reason = listed["reason"]
    assert reason.startswith("fallback: ") and "not on this server" in reason
    assert MEL in reason and BS in reason and "htdemucs_ft" in reason
    assert f"flask models download {MEL}" in reason
    job = _karaoke(client, headers, wav_bytes(sine_and_clicks(seconds=1.0)), "song.wav")
    assert job["status"] == "succeeded", job
    assert job["model"] == "htdemucs" and job["params"]["separation_model"] == "htdemucs"
    assert job["params"]["separation_model_choice"] == {"how": "fallback", "reason": reason}
    assert [f["name"] for f in job["result"]["files"]][:2] == ["instrumental.mp3", "vocals.mp3"]


def test_a_missing_best_model_falls_back_to_the_next(
    tmp_path: Path, eager_app: Callable[..., Flask], vocal_models_dir: Path
) -> None:
    """Only BS-RoFormer's folder: it is picked, and the reason names Kim's
    missing weights. A request that names Kim's model keeps it and fails."""
    import shutil

    models = tmp_path / "models"
    shutil.copytree(vocal_models_dir / "roformer" / BS, models / "roformer" / BS)
    app = eager_app(tmp_path / "d", MODELS_DIR=str(models), ALLOW_MODEL_DOWNLOAD=False)
    client = app.test_client()
    headers = register_and_login(client)
    listed = _vocals_default(client)
    assert (listed["model"], listed["how"]) == (BS, "fallback")
    assert listed["reason"].startswith(f"fallback: {MEL}'s weights are not on this server")
    assert f"{BS} is the best vocals model that can run here" in listed["reason"]

    job = _karaoke(client, headers, wav_bytes(sine_and_clicks(seconds=1.0)), "s.wav",
                   separation_model=MEL)  # fmt: skip
    assert job["status"] == "failed" and job["error"]["code"] == "model_unavailable"
    assert job["params"]["separation_model"] == MEL
    assert job["params"]["separation_model_choice"]["how"] == "requested"
    assert f"flask models download {MEL}" in job["error"]["message"]


@pytest.mark.usefixtures("no_hub_cache")
def test_no_ranked_model_can_run_uses_the_separation_default(
    tmp_path: Path, eager_app: Callable[..., Flask]
) -> None:
    app = eager_app(MODELS_DIR=str(tmp_path / "empty"), ALLOW_MODEL_DOWNLOAD=False)
    client = app.test_client()
    headers = register_and_login(client)
    listed = _vocals_default(client)
    assert (listed["model"], listed["how"]) == ("htdemucs", "fallback")
    assert not any(r["ready"] for r in listed["ranking"])
    assert listed["reason"].endswith("using the separation default htdemucs")
    job = _karaoke(client, headers, wav_bytes(sine_and_clicks(seconds=1.0)), "s.wav")
    assert job["params"]["separation_model"] == "htdemucs"
    assert job["status"] == "failed" and job["error"]["code"] == "model_unavailable"


def test_downloadable_weights_count_as_ready(
    tmp_path: Path, eager_app: Callable[..., Flask]
) -> None:
    """With ALLOW_MODEL_DOWNLOAD the best model is chosen even before its weights
    are here (the first job fetches them); the job is only queued here."""
    from app.services import vocals_model

    app = eager_app(MODELS_DIR=str(tmp_path / "empty"), ALLOW_MODEL_DOWNLOAD=True)
    listed = _vocals_default(app.test_client())
    assert (listed["model"], listed["how"]) == (MEL, "best")
    assert listed["reason"].endswith("its weights are downloaded on first use")
    with app.app_context():
        assert vocals_model.choose(app.config).model == MEL


def test_the_ranking_compares_one_benchmark_and_skips_models_without_a_figure(
    tmp_path: Path,
) -> None:
    """An ensemble (no published figure), a figure on another benchmark, a
    model without a vocals stem: none is ranked; equal figures keep catalogue order."""
    from app.models.catalogue_facts import MULTISONG, MUSDB18_HQ
    from app.services import vocals_model

    def entry(name: str, quality: list | None, stems: list | None = None, **flags: object) -> dict:
        return {
            "kind": "separation", "name": name, "stems": stems or ["vocals", "instrumental"],
            "quality": quality, "available": True, "downloadable": False, "requires": None,
            **flags,
        }  # fmt: skip

    def figure(sdr: float, benchmark: str = MULTISONG, stem: str = "vocals") -> dict:
        return {"stem": stem, "sdr_db": sdr, "benchmark": benchmark, "source": "https://x"}

    entries = [
        entry("a+b", None),  # an ensemble
        entry("musdb_only", [figure(12.0, MUSDB18_HQ)]),
        entry("drums_only", [figure(13.0)], stems=["drums", "no_drums"]),
        entry("no_vocals_figure", [figure(14.0, stem="drums")], stems=["vocals", "drums"]),
        entry("first", [figure(9.0)]),
        entry("second", [figure(9.0)]),
        entry("missing", [figure(11.0)], available=False),
        entry("needs_package", [figure(10.0)], downloadable=True, requires="diffq"),
    ]
    ranked = vocals_model.ranking(entries)
    assert [r.name for r in ranked] == ["missing", "needs_package", "first", "second"]
    config = {"MODELS_DIR": str(tmp_path), "ALLOW_MODEL_DOWNLOAD": False}
    choice = vocals_model.choose(config, entries)
    assert (choice.model, choice.how) == ("first", "fallback")
    assert "missing's weights are not on this server" in choice.reason
    assert "needs_package needs the Python package diffq" in choice.reason
    only_ensembles = vocals_model.choose(config, [entry("a+b", None)])
    assert (only_ensembles.model, only_ensembles.how) == ("htdemucs", "fallback")
    assert "no separation model here has a published vocals SDR" in only_ensembles.reason
    assert vocals_model.resolve("mdx", config) == vocals_model.Choice(
        "mdx", "requested", "named in the request"
    )


@pytest.mark.usefixtures("no_hub_cache")
def test_a_download_that_fails_at_run_time_falls_back_to_weights_that_are_here(
    eager_app: Callable[..., Flask], models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Downloads allowed but no internet: Kim's model is chosen at submission,
    its download fails in the job, and htdemucs (here) runs instead; the
    result says so."""
    from app.models import msst

    def offline(url: str, target: Path) -> None:
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(msst, "fetch", offline)
    app = eager_app(MODELS_DIR=str(models_dir), ALLOW_MODEL_DOWNLOAD=True)
    client = app.test_client()
    headers = register_and_login(client)
    job = _karaoke(client, headers, wav_bytes(sine_and_clicks(seconds=1.0)), "song.wav")
    assert job["status"] == "succeeded", job
    assert job["params"]["separation_model"] == MEL  # what was chosen
    used = job["result"]["separation_model"]  # what ran
    assert used["model"] == "htdemucs" and used["how"] == "fallback"
    assert MEL in used["reason"] and "could not be downloaded" in used["reason"]
    assert used["reason"].endswith("htdemucs ran instead.")


def test_the_server_may_set_the_vocals_model(
    eager_app: Callable[..., Flask], vocal_models_dir: Path
) -> None:
    app = eager_app(
        MODELS_DIR=str(vocal_models_dir), ALLOW_MODEL_DOWNLOAD=False, VOCALS_MODEL="htdemucs"
    )
    client = app.test_client()
    headers = register_and_login(client)
    job = _karaoke(client, headers, wav_bytes(sine_and_clicks(seconds=1.0)), "song.wav")
    assert job["status"] == "succeeded", job
    assert job["params"]["separation_model"] == "htdemucs"
    assert job["params"]["separation_model_choice"]["how"] == "configured"
    assert job["result"]["separation_model"]["model"] == "htdemucs"
