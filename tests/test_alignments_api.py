"""Alignment jobs and karaoke with lyrics, through the API, with the bundled tiny.en
on the real speech clips of tests/data/speech."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from flask import Flask
from flask.testing import FlaskClient

from tests.support.apps import register_and_login
from tests.support.speech import REFERENCES, SPEECH, words_of

CLIP = "clip2.flac"  # "Please remember to close the kitchen window before you leave the house."
LRC_LINE = re.compile(r"^\[(\d\d):(\d\d\.\d\d)\] (<\d\d:\d\d\.\d\d> \S+ ?)+$")


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def headers(client: FlaskClient) -> dict[str, str]:
    return register_and_login(client)


def _post(
    client: FlaskClient, headers: dict, audio: bytes, name: str, lyrics, route="alignments", **form
):
    payload = {"file": (io.BytesIO(audio), name), **{k: str(v) for k, v in form.items()}}
    if lyrics is not None:
        payload["lyrics"] = lyrics
    return client.post(
        f"/api/v1/{route}", data=payload, headers=headers, content_type="multipart/form-data"
    )


def _align(client: FlaskClient, headers: dict, audio: bytes, name: str, lyrics, **form) -> dict:
    response = _post(client, headers, audio, name, lyrics, **form)
    assert response.status_code == 202, response.json
    return client.get(response.headers["Location"], headers=headers).json


def test_an_alignment_job_times_every_sung_word(client: FlaskClient, headers: dict) -> None:
    audio = (SPEECH / CLIP).read_bytes()
    lyrics = "Please remember to close the kitchen window\nbefore you leave the house."
    job = _align(client, headers, audio, CLIP, lyrics)
    assert job["status"] == "succeeded", job
    assert job["kind"] == "alignment" and job["model"] == "tiny.en"
    result = job["result"]
    duration = job["input"]["duration"]
    assert [line["text"] for line in result["lines"]] == lyrics.splitlines()
    assert result["words_total"] == result["words_aligned"] == 12
    words = [w for line in result["lines"] for w in line["words"]]
    assert [w["word"] for w in words] == lyrics.split()
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)
    assert all(0 <= w["start"] < w["end"] <= duration + 0.05 for w in words)
    assert all(0 < w["confidence"] <= 1 for w in words)
    first, second = result["lines"]
    assert first["end"] <= second["start"] + 0.05

    # every transcript format, and enhanced LRC with a tag before every word
    url = f"/api/v1/jobs/{job['id']}/transcript"
    enhanced = client.get(f"{url}?format=lrc_words", headers=headers)
    assert enhanced.status_code == 200
    lines = [line for line in enhanced.text.splitlines() if line and not line.startswith("[by")]
    timed = [line for line in lines if LRC_LINE.match(line)]
    assert len(timed) == 2, enhanced.text
    assert len(re.findall(r"<\d\d:\d\d\.\d\d>", enhanced.text)) == 12
    for fmt in ("srt", "vtt", "lrc", "txt", "json"):
        assert client.get(f"{url}?format={fmt}", headers=headers).status_code == 200


def test_a_verse_that_is_not_sung_is_unaligned(client: FlaskClient, headers: dict) -> None:
    audio = (SPEECH / CLIP).read_bytes()
    lyrics = REFERENCES[CLIP] + "\n\nOur second verse was written later\nand nobody ever sang it"
    job = _align(client, headers, audio, CLIP, lyrics)
    assert job["status"] == "succeeded", job
    sung, *extra = job["result"]["lines"]
    assert sung["aligned"] and all(w["aligned"] for w in sung["words"])
    for line in extra:
        assert line["aligned"] is False and line["start"] is None and line["end"] is None
        assert all(w["start"] is None and not w["aligned"] for w in line["words"])
    assert job["result"]["words_unaligned"] == len(" ".join(x["text"] for x in extra).split())
    # the timed formats hold the sung line only
    srt = client.get(f"/api/v1/jobs/{job['id']}/transcript?format=srt", headers=headers).text
    assert "nobody" not in srt and "kitchen" in srt


def test_an_lrc_is_re_timed_and_a_file_part_works(client: FlaskClient, headers: dict) -> None:
    audio = (SPEECH / "clip5.wav").read_bytes()  # "Please shut the door when you go out."
    lrc = "[ti:Door]\n[00:42.00]Please shut the door\n[00:50.00]<00:50.00> when you go out.\n"
    job = _align(client, headers, audio, "clip5.wav", (io.BytesIO(lrc.encode()), "door.lrc"))
    assert job["status"] == "succeeded", job
    lines = job["result"]["lines"]
    assert [line["text"] for line in lines] == ["Please shut the door", "when you go out."]
    assert all(line["aligned"] for line in lines)
    assert lines[-1]["end"] <= job["input"]["duration"] + 0.05  # not the LRC's 50 s


@pytest.mark.parametrize(
    ("lyrics", "message"),
    [
        ("", "empty"),
        ("   \n\n  ", "empty"),
        ("la " * 350_000, "bytes"),  # over 1 MB as a text field
        ((io.BytesIO(b"\x00\x01\x02binary\xff" * 100), "lyrics.bin"), "binary"),
        ((io.BytesIO("caf\xe9".encode("latin-1")), "latin1.txt"), "UTF-8"),
        ("... !!! --- ?? ***", "no words"),
        (None, "required"),
    ],
)
def test_bad_lyrics_get_a_clear_422_and_no_job(
    client: FlaskClient, headers: dict, lyrics, message: str
) -> None:
    before = client.get("/api/v1/jobs", headers=headers).json["total"]
    response = _post(client, headers, (SPEECH / "clip5.wav").read_bytes(), "c.wav", lyrics)
    assert response.status_code == 422, response.json
    assert response.json["code"] == "validation_error"
    assert message.lower() in str(response.json["errors"]).lower(), response.json
    assert client.get("/api/v1/jobs", headers=headers).json["total"] == before


@pytest.fixture
def passthrough_app(eager_app: Callable[..., Flask], models_dir: Path, tmp_path: Path) -> Flask:
    """A Demucs model that hears the whole mix as vocals, so the speech clips
    are the karaoke vocals (tests/support/demucs_repo.py)."""
    from tests.support.demucs_repo import add_vocals_passthrough

    models = tmp_path / "models"
    shutil.copytree(models_dir, models)
    add_vocals_passthrough(models / "demucs", "mdx_extra")
    return eager_app(MODELS_DIR=str(models), ALLOW_MODEL_DOWNLOAD=False)


def test_karaoke_with_lyrics_packages_the_aligned_lines(passthrough_app: Flask) -> None:
    from mutagen.id3 import ID3

    client = passthrough_app.test_client()
    headers = register_and_login(client)
    lyrics = "Please remember to close\nthe kitchen window\nbefore you leave the house\n\nA line nobody sings"
    response = _post(
        client, headers, (SPEECH / CLIP).read_bytes(), CLIP, lyrics, route="karaoke",
        separation_model="mdx_extra",
    )  # fmt: skip
    assert response.status_code == 202, response.json
    job = client.get(response.headers["Location"], headers=headers).json
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["lyrics_source"] == "aligned"
    assert [line["text"] for line in result["lines"]] == lyrics.splitlines()[:3]
    assert result["alignment"]["lines"][-1]["aligned"] is False
    files = {f["name"]: f for f in result["files"]}

    enhanced = client.get(files["lyrics.words.lrc"]["url"], headers=headers).text
    timed = [line for line in enhanced.splitlines() if LRC_LINE.match(line)]
    assert len(timed) == 3, enhanced
    tags = re.findall(r"<(\d\d):(\d\d\.\d\d)>", enhanced)
    seconds = [int(m) * 60 + float(s) for m, s in tags]
    assert len(seconds) == len(words_of(" ".join(lyrics.splitlines()[:3])))
    assert seconds == sorted(seconds) and seconds[-1] <= job["input"]["duration"]

    mp3 = Path(passthrough_app.config["DATA_DIR"]) / "tagged.mp3"
    mp3.write_bytes(client.get(files["instrumental.mp3"]["url"], headers=headers).data)
    sylt = ID3(mp3).getall("SYLT")
    assert len(sylt) == 1
    assert [text for text, _ms in sylt[0].text] == lyrics.splitlines()[:3]
    stamps = [ms for _text, ms in sylt[0].text]
    assert stamps == sorted(stamps) and stamps[-1] < job["input"]["duration"] * 1000


def test_karaoke_without_lyrics_transcribes_as_before(passthrough_app: Flask) -> None:
    client = passthrough_app.test_client()
    headers = register_and_login(client)
    response = _post(
        client, headers, (SPEECH / "clip5.wav").read_bytes(), "clip5.wav", None,
        route="karaoke", separation_model="mdx_extra",
    )  # fmt: skip
    job = client.get(response.headers["Location"], headers=headers).json
    assert job["status"] == "succeeded", job
    assert job["result"]["lyrics_source"] == "transcribed" and "alignment" not in job["result"]
    assert "door" in job["result"]["lyrics"].lower()


def test_flask_align_writes_enhanced_lrc_and_json(app: Flask, tmp_path: Path) -> None:
    song = tmp_path / "clip5.wav"
    shutil.copy(SPEECH / "clip5.wav", song)
    lyrics = tmp_path / "door.txt"
    lyrics.write_text("Please shut the door\nwhen you go out\nthis line is not sung\n")
    result = app.test_cli_runner().invoke(args=["align", str(song), str(lyrics)])
    assert result.exit_code == 0, result.output
    lrc = (tmp_path / "clip5.lrc").read_text()
    assert len([line for line in lrc.splitlines() if LRC_LINE.match(line)]) == 2
    data = (tmp_path / "clip5.alignment.json").read_text()
    assert '"aligned": false' in data
    assert "1 of 3 lines" in result.output or "not sung" in result.output


def test_flask_align_takes_the_song_by_url(
    eager_app: Callable[..., Flask], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.support.media_server import MediaServer

    lyrics = tmp_path / "door.txt"
    lyrics.write_text("Please shut the door\nwhen you go out\n")
    monkeypatch.chdir(tmp_path)
    with MediaServer() as media:
        media.file("/songs/clip5.wav", (SPEECH / "clip5.wav").read_bytes())
        app = eager_app(URL_FETCH_ALLOW_HOSTS=media.authority)
        runner = app.test_cli_runner()
        result = runner.invoke(args=["align", "--url", media.url("/songs/clip5.wav"), str(lyrics)])
        both = runner.invoke(args=["align", "--url", media.url("/songs/clip5.wav"), str(lyrics),
                                   str(lyrics)])  # fmt: skip
        neither = runner.invoke(args=["align", str(lyrics)])
    assert result.exit_code == 0, result.output
    lrc = (tmp_path / "clip5.lrc").read_text()
    assert len([line for line in lrc.splitlines() if LRC_LINE.match(line)]) == 2
    assert (tmp_path / "clip5.alignment.json").is_file()
    assert "1 succeeded, 0 failed." in result.stderr
    assert both.exit_code == 2 and "Give --url URL LYRICS." in both.output
    assert neither.exit_code == 2 and "Give FILE LYRICS (or --url URL LYRICS)." in neither.output


def test_alignment_data_is_finite_on_silence(client: FlaskClient, headers: dict) -> None:
    """Silence: nothing is sung, so nothing gets a time (and nothing fails)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(16000 * 3, dtype=np.float32), 16000, format="WAV")
    job = _align(client, headers, buffer.getvalue(), "silence.wav", "hello there\ngeneral")
    assert job["status"] == "succeeded", job
    assert job["result"]["words_aligned"] == 0
    assert all(not line["aligned"] for line in job["result"]["lines"])
