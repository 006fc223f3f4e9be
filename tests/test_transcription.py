"""Transcription with the bundled Whisper tiny.en, through the real API."""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.support.apps import make_app, register_and_login
from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.procs import CeleryProcess, job_env, wait_for
from tests.support.speech import REFERENCES, SPEECH, wer, words_of


def test_wer() -> None:
    assert wer("the cat sat", "the cat sat") == 0
    assert wer("the cat sat", "the bat sat down") == pytest.approx(2 / 3)


def _submit(client: FlaskClient, headers: dict, data: bytes, name: str, **form) -> dict:
    payload = {"file": (io.BytesIO(data), name), **{k: str(v) for k, v in form.items()}}
    response = client.post(
        "/api/v1/transcriptions", data=payload, headers=headers, content_type="multipart/form-data"
    )
    assert response.status_code == 202, response.json
    return response.json


def test_clips_through_a_real_worker(tmp_path: Path) -> None:
    """Five formats, each transcribed by a real Celery worker with the bundled tiny.en."""
    app = make_app(tmp_path / "data")
    log_path = tmp_path / "worker.log"
    worker = CeleryProcess(log_path, job_env(app))
    try:
        client = app.test_client()
        headers = register_and_login(client)
        jobs = {
            name: _submit(client, headers, (SPEECH / name).read_bytes(), name, word_timestamps=True)
            for name in REFERENCES
        }

        def done() -> dict | None:
            current = {n: client.get(j["url"], headers=headers).json for n, j in jobs.items()}
            finished = all(j["status"] in ("succeeded", "failed") for j in current.values())
            return current if finished else None

        results = wait_for(done, 240, "the transcriptions", [log_path])
    finally:
        worker.stop()
    for name, job in results.items():
        assert job["status"] == "succeeded", (name, job)
        result = job["result"]
        assert wer(REFERENCES[name], result["text"]) < 0.25, (name, result["text"])
        assert result["language"] == "en"
        assert job["model"] == "tiny.en"
        duration = job["input"]["duration"]
        starts = [w["start"] for w in result["words"]]
        assert starts == sorted(starts), name
        assert all(0 <= w["start"] <= w["end"] <= duration + 0.05 for w in result["words"]), name
        assert len(result["words"]) >= len(words_of(REFERENCES[name])) - 2


def test_result_and_every_transcript_format(client: FlaskClient, auth_headers: dict) -> None:
    name = "clip2.flac"
    job = _submit(client, auth_headers, (SPEECH / name).read_bytes(), name, word_timestamps=True)
    job = client.get(job["url"], headers=auth_headers).json
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert set(result) >= {
        "text",
        "language",
        "language_probability",
        "duration",
        "segments",
        "words",
    }
    assert result["language_probability"] > 0.5
    segment = result["segments"][0]
    assert set(segment) >= {"start", "end", "text", "avg_logprob", "no_speech_prob"}
    url = result["transcript_url"]

    srt = client.get(f"{url}?format=srt", headers=auth_headers)
    assert srt.status_code == 200 and srt.mimetype == "application/x-subrip"
    assert re.match(r"1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n", srt.text)
    vtt = client.get(f"{url}?format=vtt", headers=auth_headers)
    assert vtt.text.startswith("WEBVTT\n\n") and vtt.mimetype == "text/vtt"
    assert re.search(r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}", vtt.text)
    lrc = client.get(f"{url}?format=lrc", headers=auth_headers).text
    assert re.search(r"^\[\d\d:\d\d\.\d\d\]\S", lrc, re.M)
    words_lrc = client.get(f"{url}?format=lrc_words", headers=auth_headers).text
    assert re.search(r"<\d\d:\d\d\.\d\d>", words_lrc)
    tsv = client.get(f"{url}?format=tsv", headers=auth_headers).text
    assert tsv.splitlines()[0] == "start\tend\ttext"
    txt = client.get(f"{url}?format=txt", headers=auth_headers)
    assert wer(REFERENCES[name], txt.text) < 0.25
    as_json = client.get(f"{url}?format=json&download=true", headers=auth_headers)
    assert as_json.json["text"] == result["text"]
    assert 'filename="clip2.json"' in as_json.headers["Content-Disposition"]
    bad = client.get(f"{url}?format=docx", headers=auth_headers)
    assert bad.status_code == 422

    # Line lengths: narrow one-line cues split at words, each line within the limit.
    def cue_lines(body: str, times: str) -> list[list[str]]:
        cues = [block.splitlines() for block in body.strip().split("\n\n")]
        return [[line for line in cue if line and not re.search(times, line)] for cue in cues]

    narrow = client.get(f"{url}?format=srt&max_line_chars=16&max_lines=1", headers=auth_headers)
    assert narrow.status_code == 200
    cues = [lines[1:] for lines in cue_lines(narrow.text, " --> ")]  # drop the cue number
    assert len(cues) > len(cue_lines(srt.text, " --> "))
    assert all(len(lines) == 1 and len(lines[0]) <= 16 for lines in cues), cues
    assert wer(REFERENCES[name], " ".join(line for lines in cues for line in lines)) < 0.25
    wide = client.get(f"{url}?format=vtt&max_line_chars=200&max_lines=4", headers=auth_headers)
    assert len(cue_lines(wide.text, " --> ")[1:]) <= len(cue_lines(vtt.text, " --> ")[1:])
    short_lrc = client.get(f"{url}?format=lrc&max_line_chars=12", headers=auth_headers).text
    lyric_lines = [line[10:] for line in short_lrc.splitlines() if re.match(r"\[\d\d:", line)]
    assert lyric_lines and all(len(line) <= 12 for line in lyric_lines), lyric_lines
    for query in ("max_line_chars=5", "max_line_chars=201", "max_lines=0", "max_lines=x"):
        refused = client.get(f"{url}?format=srt&{query}", headers=auth_headers)
        assert refused.status_code == 422, query
        assert refused.json["code"] == "validation_error", refused.json


def test_options_are_validated(client: FlaskClient, auth_headers: dict) -> None:
    clip = (SPEECH / "clip1.mp3").read_bytes()
    cases = {
        "task": {"task": "translate"},  # tiny.en is English-only
        "language": {"language": "fr"},
        "beam_size": {"beam_size": 0},
        "compute_type": {"compute_type": "int4"},
        "model": {"model": "whisper-9000"},
        "separation_model": {"separation_model": "htdemucs"},  # without isolate_vocals
        # Needs word timestamps (faster-whisper ignores it otherwise).
        "hallucination_silence_threshold": {"hallucination_silence_threshold": 2},
        "no_speech_threshold": {"no_speech_threshold": 1.5},
        "log_prob_threshold": {"log_prob_threshold": 1},
        "compression_ratio_threshold": {"compression_ratio_threshold": 0.5},
        "repetition_penalty": {"repetition_penalty": 0.5},
        "no_repeat_ngram_size": {"no_repeat_ngram_size": 11},
        "hotwords": {"hotwords": "x" * 1001},
    }
    for field, form in cases.items():
        payload = {"file": (io.BytesIO(clip), "c.mp3"), **{k: str(v) for k, v in form.items()}}
        response = client.post(
            "/api/v1/transcriptions", data=payload, headers=auth_headers,
            content_type="multipart/form-data",
        )  # fmt: skip
        assert response.status_code == 422, (field, response.json)
        assert field in response.json["errors"], (field, response.json)


def test_decoding_options_reach_faster_whisper(
    client: FlaskClient, auth_headers: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from faster_whisper import WhisperModel

    received: list[dict] = []
    real = WhisperModel.transcribe

    def spy(self: WhisperModel, audio: object, **options: object) -> object:
        received.append(options)
        return real(self, audio, **options)

    monkeypatch.setattr(WhisperModel, "transcribe", spy)
    options = {
        "hotwords": "stream rhythm",
        "no_speech_threshold": 0.5,
        "log_prob_threshold": -1.5,
        "compression_ratio_threshold": 2.2,
        "repetition_penalty": 1.1,
        "no_repeat_ngram_size": 3,
        "hallucination_silence_threshold": 2.0,
    }
    name = "clip2.flac"
    job = _submit(
        client, auth_headers, (SPEECH / name).read_bytes(), name, word_timestamps=True, **options
    )
    job = client.get(job["url"], headers=auth_headers).json
    assert job["status"] == "succeeded", job
    assert wer(REFERENCES[name], job["result"]["text"]) < 0.25
    assert {key: job["params"][key] for key in options} == options
    assert len(received) == 1
    assert {key: received[0][key] for key in options} == options


def test_language_detection_and_model_reuse(client: FlaskClient, auth_headers: dict) -> None:
    from app.models.cache import get_cache

    clip = (SPEECH / "clip3.ogg").read_bytes()
    for _ in range(2):
        job = _submit(client, auth_headers, clip, "clip3.ogg", vad_filter=True, vad_threshold=0.4)
        job = client.get(job["url"], headers=auth_headers).json
        assert job["status"] == "succeeded", job
        assert job["result"]["language"] == "en"
        assert wer(REFERENCES["clip3.ogg"], job["result"]["text"]) < 0.25
    assert get_cache().loads == {("transcription", "tiny.en@int8", "cpu"): 1}


def test_missing_whisper_weights_fail_with_model_unavailable(
    tmp_path: Path, eager_app: Callable[..., Flask]
) -> None:
    app = eager_app(tmp_path / "d", ALLOW_MODEL_DOWNLOAD=False)
    client = app.test_client()
    headers = register_and_login(client)
    job = _submit(client, headers, (SPEECH / "clip1.mp3").read_bytes(), "c.mp3", model="small")
    job = client.get(job["url"], headers=headers).json
    assert job["status"] == "failed"
    assert job["error"]["code"] == "model_unavailable"
    assert "small" in job["error"]["message"]


def test_isolate_vocals_runs_separation_then_transcription(
    demucs_app: Flask, progress_log: list
) -> None:
    client = demucs_app.test_client()
    headers = register_and_login(client)
    job = _submit(
        client, headers, (SPEECH / "clip5.wav").read_bytes(), "clip5.wav",
        isolate_vocals=True, separation_model="mdx",
    )  # fmt: skip
    job = client.get(job["url"], headers=headers).json
    assert job["status"] == "succeeded", job
    assert job["params"]["separation_model"] == "mdx"
    stages = [stage for _, stage in progress_log if stage]
    assert stages.index("separating") < stages.index("transcribing")
    assert job["progress"] == 1.0
    assert isinstance(job["result"]["text"], str)
    assert job["result"]["files"] == []  # the vocals were an intermediate step
    folder = Path(demucs_app.config["DATA_DIR"]) / "jobs" / job["id"] / "results"
    assert list(folder.rglob("*.wav")) == []


def test_isolate_vocals_needs_a_vocals_stem(demucs_app: Flask) -> None:
    client = demucs_app.test_client()
    headers = register_and_login(client)
    response = client.post(
        "/api/v1/transcriptions",
        data={"file": (io.BytesIO(wav_bytes(sine_and_clicks())), "s.wav"), "isolate_vocals": "true",
              "separation_model": "hpss"},
        headers=headers,
        content_type="multipart/form-data",
    )  # fmt: skip
    assert response.status_code == 422
    assert "separation_model" in response.json["errors"]


@pytest.mark.parametrize(
    ("form", "model", "how"),
    [
        ({"separation_model": "bs_roformer_viperx_1297"}, "bs_roformer_viperx_1297", "requested"),
        ({}, "mel_band_roformer_kim", "best"),  # the best vocals model here
    ],
    ids=["named", "default"],
)
def test_isolate_vocals_with_a_roformer(
    eager_app: Callable[..., Flask], vocal_models_dir: Path, progress_log: list,
    form: dict, model: str, how: str,
) -> None:  # fmt: skip
    """A RoFormer vocal model (vocals + instrumental) isolates the vocals, named
    or as the default when the request names none; the job says which ran."""
    app = eager_app(MODELS_DIR=str(vocal_models_dir), ALLOW_MODEL_DOWNLOAD=False)
    client = app.test_client()
    headers = register_and_login(client)
    job = _submit(
        client, headers, (SPEECH / "clip5.wav").read_bytes(), "clip5.wav",
        isolate_vocals=True, **form,
    )  # fmt: skip
    job = client.get(job["url"], headers=headers).json
    assert job["status"] == "succeeded", job
    assert job["model"] == "tiny.en"
    assert job["params"]["separation_model"] == model
    assert job["params"]["separation_model_choice"]["how"] == how
    stages = [stage for _, stage in progress_log if stage]
    assert stages.index("separating") < stages.index("transcribing")
    assert isinstance(job["result"]["text"], str) and job["result"]["files"] == []
    plain = _submit(client, headers, (SPEECH / "clip5.wav").read_bytes(), "clip5.wav")
    assert "separation_model_choice" not in plain["params"]  # no vocals isolated


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The app on a real loopback port (the OpenAI SDK speaks HTTP)."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_openai_sdk_against_the_compatible_route(client: FlaskClient, live_server: str) -> None:
    import openai

    token = register_and_login(client)["Authorization"].split()[1]
    sdk = openai.OpenAI(base_url=f"{live_server}/v1", api_key=token, max_retries=0)
    clip = SPEECH / "clip4.m4a"
    reference = REFERENCES["clip4.m4a"]

    with clip.open("rb") as fh:
        plain = sdk.audio.transcriptions.create(model="whisper-1", file=fh)
    assert wer(reference, plain.text) < 0.25

    with clip.open("rb") as fh:
        verbose = sdk.audio.transcriptions.create(
            model="whisper-1", file=fh, response_format="verbose_json",
            timestamp_granularities=["word", "segment"], language="en",
        )  # fmt: skip
    assert verbose.language == "english"
    assert verbose.duration > 4
    assert verbose.words and verbose.words[0].start <= verbose.words[-1].start
    assert verbose.segments and verbose.segments[0].text.strip()

    with clip.open("rb") as fh:
        srt = sdk.audio.transcriptions.create(model="tiny.en", file=fh, response_format="srt")
    assert srt.startswith("1\n00:00:")
    with clip.open("rb") as fh:
        text = sdk.audio.transcriptions.create(model="whisper-1", file=fh, response_format="text")
    assert wer(reference, text) < 0.25

    with clip.open("rb") as fh, pytest.raises(openai.UnprocessableEntityError):
        sdk.audio.translations.create(model="whisper-1", file=fh)  # tiny.en cannot translate
    with clip.open("rb") as fh, pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=f"{live_server}/v1", api_key="nope", max_retries=0
        ).audio.transcriptions.create(model="whisper-1", file=fh)


def test_openai_route_answers_202_when_the_job_outlasts_the_wait(
    queued_app: Flask,
) -> None:
    queued_app.config["OPENAI_WAIT_SECONDS"] = 0.3
    client = queued_app.test_client()
    headers = register_and_login(client)
    response = client.post(
        "/v1/audio/transcriptions",
        data={"file": ((SPEECH / "clip1.mp3").open("rb"), "c.mp3"), "model": "whisper-1"},
        headers=headers,
        content_type="multipart/form-data",
    )
    assert response.status_code == 202
    assert response.json["status"] == "queued"
    assert response.headers["Location"] == response.json["url"]
    assert client.get(response.json["url"], headers=headers).json["kind"] == "transcription"


def test_numpy_blas_runs_single_threaded_while_whisper_transcribes() -> None:
    """numpy's OpenBLAS threads spin between calls and slow CTranslate2 on a
    small machine; the engine keeps them to one for the transcription and puts
    the process's setting back afterwards."""
    from threadpoolctl import threadpool_info

    from app import audio
    from app.models import whisper_engine

    def blas_threads() -> list[int]:
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas_threads()
    if not before:
        pytest.skip("numpy is linked to no BLAS threadpoolctl knows: nothing to limit")
    model = whisper_engine.load("tiny.en", {"MODELS_DIR": "/nonexistent"}, "cpu", "int8")
    samples, _ = audio.decode(SPEECH / "clip2.flac", sample_rate=16000, channels=1)
    seen: list[list[int]] = []
    result = whisper_engine.transcribe(
        model, samples[0], {"beam_size": 1}, lambda _f: seen.append(blas_threads())
    )
    assert wer(REFERENCES["clip2.flac"], result["text"]) < 0.25
    assert seen and all(threads == [1] * len(before) for threads in seen), seen
    assert blas_threads() == before
