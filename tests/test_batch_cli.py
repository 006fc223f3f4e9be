"""``flask separate|transcribe|generate``: files in, files out, no HTTP, no job rows."""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from flask import Flask
from flask.testing import FlaskCliRunner
from tqdm import tqdm

from app.batch import TqdmProgress
from app.extensions import db
from app.records import Job
from app.services.runner import SubProgress
from tests.support.apps import make_app, register_and_login
from tests.support.audio import SR, sine_and_clicks, wav_bytes

SPEECH = Path(__file__).parent / "data" / "speech"


def _song(folder: Path, name: str = "song.wav", seconds: float = 2.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(wav_bytes(sine_and_clicks(seconds)))
    return path


def _job_count(app: Flask) -> int:
    with app.app_context():
        return db.session.query(Job).count()


def test_the_progress_adapter_drives_a_tqdm_bar() -> None:
    sink = io.StringIO()
    bar = tqdm(total=100, file=sink, mininterval=0)
    report = TqdmProgress(bar)
    report.stage("loading_model", 0.0)
    report(0.5, "separating")
    assert bar.n == 50 and report.progress == 0.5
    report(0.3)  # never backwards, like the job reporter
    assert bar.n == 50
    SubProgress(report, 0.5, 1.0)(0.5)  # pipelines report through slices
    assert bar.n == 75
    report.stage("encoding")
    assert bar.n == 75 and "encoding" in bar.postfix
    bar.close()
    assert "75%" in sink.getvalue()


def test_separate_writes_stems_next_to_each_input(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    first = _song(tmp_path / "a")
    second = _song(tmp_path / "b", "other song.wav", seconds=1.5)
    result = runner.invoke(
        args=["separate", str(first), str(second), "--model", "hpss", "--format", "flac"]
    )
    assert result.exit_code == 0, result.output
    for source, seconds in ((first, 2.0), (second, 1.5)):
        folder = source.parent / source.stem
        assert sorted(p.name for p in folder.iterdir()) == ["harmonic.flac", "percussive.flac"]
        for stem in folder.iterdir():
            assert str(stem) in result.stdout
            info = sf.info(stem)
            assert info.samplerate == SR and info.channels == 2
            assert info.frames == int(seconds * SR)
    # Progress bars go to stderr, the written paths to stdout.
    assert "100%" in result.stderr
    # No leftovers (work folders) and no job rows.
    assert sorted(p.name for p in first.parent.iterdir()) == ["song", "song.wav"]
    assert _job_count(app) == 0


def test_separate_keeps_going_past_a_bad_file_and_exits_1(
    runner: FlaskCliRunner, tmp_path: Path
) -> None:
    good = _song(tmp_path)
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio at all")
    out = tmp_path / "stems"
    result = runner.invoke(
        args=["separate", str(bad), str(good), "--model", "hpss", "--out", str(out), "-q"]
    )
    assert result.exit_code == 1
    assert "notes.wav: failed:" in result.stderr
    assert sorted(p.name for p in (out / "song").iterdir()) == ["harmonic.wav", "percussive.wav"]
    assert not (out / "notes").exists()
    assert "%" not in result.stderr  # --quiet: no bars


def test_separate_validates_options_like_the_api(runner: FlaskCliRunner, tmp_path: Path) -> None:
    song = _song(tmp_path)
    result = runner.invoke(args=["separate", str(song), "--model", "hpss", "--shifts", "2"])
    assert (
        result.exit_code == 2
        and "--shifts: Model 'hpss' does not take this option" in result.output
    )
    result = runner.invoke(args=["separate", str(song), "--model", "nope"])
    assert result.exit_code == 2 and "--model: Unknown model" in result.output
    result = runner.invoke(args=["separate", str(song), "--format", "flac", "--bit-depth", "32f"])
    assert result.exit_code == 2 and "--bit-depth" in result.output
    result = runner.invoke(args=["separate", str(tmp_path / "missing.wav")])
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "song").exists()


@pytest.fixture
def demucs_runner(demucs_app: Flask) -> FlaskCliRunner:
    return demucs_app.test_cli_runner()


def test_separate_with_demucs_gives_the_same_stems_as_a_job(
    demucs_app: Flask, demucs_runner: FlaskCliRunner, tmp_path: Path
) -> None:
    song = _song(tmp_path)
    options = {"two_stems": "vocals", "bit_depth": "32f", "clip_mode": "none", "shifts": "0"}
    result = demucs_runner.invoke(
        args=["separate", str(song), "--model", "htdemucs", "--out", str(tmp_path / "out")]
        + [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "out" / "song"
    assert sorted(p.name for p in folder.iterdir()) == ["no_vocals.wav", "vocals.wav"]
    vocals, rate = sf.read(folder / "vocals.wav", always_2d=True)
    no_vocals, _ = sf.read(folder / "no_vocals.wav", always_2d=True)
    mix, _ = sf.read(song, always_2d=True)
    assert rate == SR and vocals.shape == mix.shape
    np.testing.assert_allclose(vocals + no_vocals, mix, atol=1e-4)  # no_vocals = mix - vocals

    # The API's job, run on the same file with the same options, writes the same samples.
    client = demucs_app.test_client()
    headers = register_and_login(client)
    response = client.post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(song.read_bytes()), "song.wav"), "model": "htdemucs", **options},
        headers=headers,
        content_type="multipart/form-data",
    )
    job = client.get(response.headers["Location"], headers=headers).json
    assert job["status"] == "succeeded", job
    url = next(f["url"] for f in job["result"]["files"] if f["stem"] == "vocals")
    from_job, _ = sf.read(io.BytesIO(client.get(url, headers=headers).data), always_2d=True)
    np.testing.assert_array_equal(from_job, vocals)


def test_transcribe_writes_subtitles_next_to_the_input(
    app: Flask, runner: FlaskCliRunner, tmp_path: Path
) -> None:
    references = json.loads((SPEECH / "references.json").read_text())
    clips = []
    for name in ("clip1.mp3", "clip2.flac"):
        shutil.copy(SPEECH / name, tmp_path / name)
        clips.append(tmp_path / name)
    result = runner.invoke(
        args=[
            "transcribe",
            *map(str, clips),
            "-f",
            "srt",
            "-f",
            "json",
            "-f",
            "lrc_words",
            "--word-timestamps",
        ]
    )
    assert result.exit_code == 0, result.output
    for clip in clips:
        srt = clip.with_suffix(".srt").read_text()
        assert srt.startswith("1\n00:00:00,")
        data = json.loads(clip.with_suffix(".json").read_text())
        assert data["language"] == "en"
        spoken = " ".join(data["text"].lower().replace(".", "").replace(",", "").split())
        expected = references[clip.name].lower().replace(".", "").replace(",", "")
        assert spoken == " ".join(expected.split())
        assert data["words"] and all(w["end"] >= w["start"] for w in data["words"])
        lrc = (tmp_path / f"{clip.stem}.words.lrc").read_text()
        assert "<00:" in lrc  # a time tag before every word
    assert _job_count(app) == 0


def test_transcribe_refuses_what_the_api_refuses(runner: FlaskCliRunner, tmp_path: Path) -> None:
    shutil.copy(SPEECH / "clip1.mp3", tmp_path / "clip1.mp3")
    result = runner.invoke(
        args=["transcribe", str(tmp_path / "clip1.mp3"), "--model", "no-such-whisper"]
    )
    assert result.exit_code == 2 and "--model" in result.output
    result = runner.invoke(args=["transcribe", str(tmp_path / "clip1.mp3"), "--task", "translate"])
    assert result.exit_code == 2 and "English-only" in result.output
    clip = str(tmp_path / "clip1.mp3")
    result = runner.invoke(
        args=["transcribe", clip, "--decoding", "sequential", "--batch-size", "2"]
    )
    assert result.exit_code == 2 and "--batch-size" in result.output
    assert not (tmp_path / "clip1.srt").exists()


@pytest.fixture
def musicgen_app(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    from tests.support.musicgen_models import build_tiny_musicgen

    models = tmp_path_factory.mktemp("cli-musicgen")
    build_tiny_musicgen(models / "musicgen" / "musicgen-small")
    yield make_app(tmp_path / "data", MODELS_DIR=str(models), ALLOW_MODEL_DOWNLOAD=False)


def test_generate_writes_a_reproducible_file(musicgen_app: Flask, tmp_path: Path) -> None:
    runner = musicgen_app.test_cli_runner()
    outputs = []
    for folder in ("one", "two"):
        result = runner.invoke(
            args=[
                "generate",
                "calm piano loop",
                "--duration",
                "1.5",
                "--seed",
                "7",
                "--out",
                str(tmp_path / folder),
            ]
        )
        assert result.exit_code == 0, result.output
        path = tmp_path / folder / "calm-piano-loop-7.wav"
        assert result.stdout.strip() == str(path)
        assert "seed 7" in result.stderr
        outputs.append(sf.read(path, always_2d=True))
    (first, rate), (second, _) = outputs
    assert rate == 32000 and abs(first.shape[0] / rate - 1.5) < 0.05
    np.testing.assert_array_equal(first, second)  # same seed, same audio

    # Without a seed one is drawn and printed, so the run can be repeated.
    result = runner.invoke(
        args=["generate", "jazz", "-d", "1", "--format", "flac", "-o", str(tmp_path / "three")]
    )
    assert result.exit_code == 0, result.output
    written = Path(result.stdout.strip())
    assert written.parent == tmp_path / "three" and written.suffix == ".flac"
    seed = written.stem.split("-")[-1]
    assert f"seed {seed}" in result.stderr
    assert _job_count(musicgen_app) == 0


def test_generate_validates_like_the_api(musicgen_app: Flask, tmp_path: Path) -> None:
    runner = musicgen_app.test_cli_runner()
    out = tmp_path / "out"
    result = runner.invoke(args=["generate", "jazz", "--duration", "500", "-o", str(out)])
    assert result.exit_code == 2 and "--duration" in result.output
    result = runner.invoke(args=["generate", "", "-o", str(out)])
    assert result.exit_code == 2 and "--prompt" in result.output
    assert not out.exists()


def test_separate_fetches_urls_and_sums_up(
    eager_app: Callable[..., Flask], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--url`` fetches with the jobs' guarded fetch; the summary counts what
    succeeded and failed, with the reasons and the paths written."""
    from tests.support.media_server import MediaServer

    local = _song(tmp_path / "in", "local.wav", seconds=1.5)
    with MediaServer() as media:
        media.file("/music/Remote%20Song.wav", wav_bytes(sine_and_clicks(2.0)))
        media.redirect("/inward", "http://169.254.169.254/latest/meta-data/")
        app = eager_app(URL_FETCH_ALLOW_HOSTS=media.authority)
        out = tmp_path / "out"
        result = app.test_cli_runner().invoke(
            args=[
                "separate", str(local),
                "--url", media.url("/music/Remote%20Song.wav"),
                "--url", media.url("/missing.wav"),
                "--url", media.url("/inward"),
                "--url", "ftp://example.com/song.mp3",
                "--model", "hpss", "--out", str(out), "-q",
            ]
        )  # fmt: skip
        # Without --out, a URL's stems go to the current folder.
        monkeypatch.chdir(tmp_path)
        alone = app.test_cli_runner().invoke(
            args=["separate", "--url", media.url("/music/Remote%20Song.wav"), "-m", "hpss", "-q"]
        )
    assert result.exit_code == 1, result.output
    stems = {
        "local": sorted((out / "local").iterdir()),
        "Remote Song": sorted((out / "Remote Song").iterdir()),
    }
    assert sorted(p.name for p in out.iterdir()) == ["Remote Song", "local"]
    for name, seconds in (("local", 1.5), ("Remote Song", 2.0)):
        assert [p.name for p in stems[name]] == ["harmonic.wav", "percussive.wav"]
        for stem in stems[name]:
            assert str(stem) in result.stdout
            assert sf.info(stem).frames == int(seconds * SR)
    summary = result.stderr.splitlines()
    assert "2 succeeded, 3 failed." in summary
    assert f"  ok      {local} -> {stems['local'][0]}, {stems['local'][1]}" in summary
    assert (
        f"  failed  {media.url('/missing.wav')}: url_http_error: "
        "127.0.0.1 answered HTTP 404 Not Found." in summary
    )
    inward = next(line for line in summary if line.startswith(f"  failed  {media.url('/inward')}"))
    assert "url_not_allowed: url resolves to 169.254.169.254" in inward
    assert "  failed  ftp://example.com/song.mp3: invalid_url: url must use http or https." in (
        summary
    )
    assert alone.exit_code == 0, alone.output
    assert sorted(p.name for p in (tmp_path / "Remote Song").iterdir()) == [
        "harmonic.wav",
        "percussive.wav",
    ]
    assert "1 succeeded, 0 failed." in alone.stderr


def test_separate_needs_a_file_or_a_url(runner: FlaskCliRunner) -> None:
    result = runner.invoke(args=["separate", "--model", "hpss"])
    assert result.exit_code == 2 and "Give at least one file or --url." in result.output
