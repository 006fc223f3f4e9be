"""The web page at ``/`` in a real headless Chromium against a real HTTP server.

A user registers, drops a WAV on the page, watches the job, plays a stem,
downloads the stems and the zip; jobs started elsewhere show up live; an
expired access token is refreshed; transcripts and karaoke lyrics follow
the audio. Screenshots (desktop and phone) go to ``test-artifacts/``.
"""

from __future__ import annotations

import base64
import io
import re
import secrets
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
from flask import Flask

from tests.support.audio import SR, sine_and_clicks, wav_bytes
from tests.support.browser import LiveServer, screenshot

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "a long enough password"


def sign_up(page: Any) -> str:
    email = f"page-{secrets.token_hex(4)}@example.com"
    page.goto("/")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    page.locator("#app-view").wait_for(state="visible")
    page.locator("#whoami").filter(has_text=email).wait_for()
    return email


def drop_file(page: Any, selector: str, name: str, data: bytes, mime: str) -> None:
    """Drags a file onto ``selector`` the way a browser does: a DataTransfer in a drop event."""
    page.evaluate(
        """([selector, name, b64, mime]) => {
            const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: mime }));
            const target = document.querySelector(selector);
            for (const type of ["dragenter", "dragover", "drop"]) {
                target.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
            }
        }""",
        [selector, name, base64.b64encode(data).decode(), mime],
    )


def watch_upload_progress(page: Any) -> None:
    """Records the highest value the upload progress bar shows."""
    page.evaluate(
        """() => {
            window.__uploadMax = 0;
            const bar = document.querySelector("#upload-progress");
            new MutationObserver(() => {
                window.__uploadMax = Math.max(window.__uploadMax, Number(bar.value));
            }).observe(bar, { attributes: true });
            const original = Object.getOwnPropertyDescriptor(HTMLProgressElement.prototype, "value");
            Object.defineProperty(bar, "value", {
                get() { return original.get.call(this); },
                set(v) { original.set.call(this, v); window.__uploadMax = Math.max(window.__uploadMax, Number(v)); },
            });
        }"""
    )


def painted_pixels(page: Any, canvas: Any) -> int:
    return canvas.evaluate(
        """(canvas) => {
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let n = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;
            return n;
        }"""
    )


def test_separate_play_and_download(page: Any, server: LiveServer, tmp_path: Path) -> None:
    response = page.goto("/")
    csp = response.headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp and "script-src 'self'" in csp
    assert "media-src 'self' blob:" in csp
    screenshot(page, "login")

    sign_up(page)
    # Every visible form control has a label a screen reader can read.
    unlabeled = page.evaluate(
        """() => Array.from(document.querySelectorAll("input, select, textarea"))
            .filter((el) => el.offsetParent !== null && el.type !== "hidden")
            .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label"))
            .map((el) => el.name || el.id)"""
    )
    assert unlabeled == []

    page.locator("input[name=kind][value=separation]").check()
    page.locator("#sep-model").select_option("hpss")
    page.locator("#sep-format").select_option("wav")
    page.locator("fieldset[data-kind=separation] input[name=analyze]").check()
    page.locator("#sep-advanced summary").click()  # hpss's own options, none of Demucs's
    assert page.locator("#sep-opt-kernel-size").get_attribute("placeholder") == "31"
    assert page.locator("#sep-opt-shifts").count() == 0

    drop_file(page, "#dropzone", "song.wav", wav_bytes(sine_and_clicks(2.0)), "audio/wav")
    page.locator("#file-chosen").filter(has_text="song.wav").wait_for()
    watch_upload_progress(page)
    page.get_by_role("button", name="Separate", exact=True).click()

    job = page.locator(".job").first
    job.locator(".badge", has_text="Done").wait_for()
    assert page.evaluate("window.__uploadMax") == 100
    assert "Separation: song.wav" in job.locator(".job-title").inner_text()
    stems = job.locator(".stem")
    stems.nth(1).wait_for()
    assert stems.count() == 2
    assert sorted(s.get_attribute("data-stem") for s in stems.all()) == ["harmonic", "percussive"]
    for stem in stems.all():
        stem.locator("canvas").wait_for()
        page.wait_for_function("(el) => el.classList.contains('ready')", arg=stem.element_handle())
        assert painted_pixels(page, stem.locator("canvas")) > 500  # a waveform, not a blank box

    # Play a stem: the element loads the blob, knows its length and time advances.
    audio = stems.first.locator("audio")
    audio.evaluate("(a) => a.play()")
    page.wait_for_function("(a) => a.currentTime > 0.3", arg=audio.element_handle(), timeout=15_000)
    state = audio.evaluate("(a) => ({error: a.error && a.error.code, duration: a.duration})")
    assert state["error"] is None
    assert abs(state["duration"] - 2.0) < 0.05
    audio.evaluate("(a) => a.pause()")
    # analyze=true: key, tempo and loudness of the upload, and the chord
    # timeline whose playhead followed the stem that played.
    facts = job.locator(".analysis-box dl").inner_text()
    assert "Key" in facts and "Tempo" in facts and re.search(r"-?\d+(\.\d+)? LUFS", facts)
    assert "Tuning" in facts and "A4 = " in facts
    assert job.locator(".chord-timeline .chords-track .segment").count() >= 1
    playhead = job.locator(".chord-timeline .chords-track .playhead")
    assert playhead.evaluate("(el) => parseFloat(el.style.left)") > 10
    assert "Chord: " in job.locator(".chord-timeline .now-chord").inner_text()
    screenshot(page, "separation-results")

    # The zip holds both stems, each the length of the upload.
    with page.expect_download() as info:
        job.locator("button[data-download=archive]").click()
    archive = tmp_path / "stems.zip"
    info.value.save_as(archive)
    assert info.value.suggested_filename == "song.zip"
    with zipfile.ZipFile(archive) as bundle:
        # analyze=true adds the chord chart beside the stems.
        assert sorted(bundle.namelist()) == [
            "chords.lab",
            "chords.txt",
            "harmonic.wav",
            "percussive.wav",
        ]
        for name in ["harmonic.wav", "percussive.wav"]:
            data, rate = sf.read(io.BytesIO(bundle.read(name)), always_2d=True)
            assert rate == SR and data.shape == (2 * SR, 2)

    with page.expect_download() as info:
        stems.first.get_by_role("button", name=re.compile(r"^Download \w+\.wav$")).click()
    assert re.fullmatch(r"song - (harmonic|percussive)\.wav", info.value.suggested_filename)

    # A phone-sized screen: one column, nothing wider than the viewport.
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "separation-results-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Delete: the card goes, and so does the job.
    page.once("dialog", lambda dialog: dialog.accept())
    job.get_by_role("button", name="Delete").click()
    page.locator("#jobs-empty").wait_for(state="visible")
    assert page.locator(".job").count() == 0
    assert page.problems == []


@pytest.mark.parametrize("transport", ["server", "polling"])
def test_live_status_from_a_queued_job(chromium: Any, tmp_path: Path, transport: str) -> None:
    """A queued job's card follows it to its results without a reload: over the
    events stream when the server has one, by polling when it has not (the
    "polling" run hides the route from the page), and a queued job can be
    canceled from the page."""
    from tests.support.apps import make_app

    app = make_app(tmp_path / "data")  # publishes to the SQLite broker; no worker runs
    with LiveServer(app) as live:
        context = chromium.new_context(base_url=live.url, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        page.set_default_timeout(30_000)
        has_events = transport == "server" and any(
            r.rule.endswith("/events") for r in app.url_map.iter_rules()
        )
        if transport == "polling":
            hide_events_route(page)
        try:
            sign_up(page)
            page.locator("#sep-model").select_option("hpss")
            page.locator("#file-input").set_input_files(
                files=[
                    {
                        "name": "queued.wav",
                        "mimeType": "audio/wav",
                        "buffer": wav_bytes(sine_and_clicks(1.0)),
                    }
                ]
            )
            page.get_by_role("button", name="Separate", exact=True).click()
            first = page.locator(".job").first
            first.locator(".badge", has_text="Queued").wait_for()
            assert first.locator(".job-stage").inner_text().endswith("waiting for a worker")
            job_id = first.get_attribute("data-job-id")

            # A worker would run it now; run it here, in this process.
            run_job_in_background(app, job_id)
            first.locator(".badge", has_text="Done").wait_for(timeout=60_000)
            # Screen readers hear it: the aria-live region says so.
            page.locator("#announcer", has_text="queued.wav: Done").wait_for()
            first.locator(".stem.ready").first.wait_for()
            streamed = [u for u in requests if u.endswith(f"/api/v1/jobs/{job_id}/events")]
            polls = [u for u in requests if u.endswith(f"/api/v1/jobs/{job_id}")]
            if has_events:
                assert streamed
            else:
                assert not streamed and polls

            # Cancel a second, queued job from the page.
            page.locator("input[name=kind][value=analysis]").check()
            page.get_by_role("button", name="Analyse", exact=True).click()
            second = page.locator(".job").first
            second.locator(".badge", has_text="Queued").wait_for()
            second.get_by_role("button", name="Cancel").click()
            second.locator(".badge", has_text="Canceled").wait_for()
            assert second.get_by_role("button", name="Cancel").is_hidden()
            screenshot(page, f"live-status-{transport}")

            # A job started elsewhere (another client) shows up first on Refresh.
            token = page.evaluate("JSON.parse(sessionStorage.getItem('ams.session')).access")
            response = app.test_client().post(
                "/api/v1/analyses",
                data={"file": (io.BytesIO(wav_bytes(sine_and_clicks(1.0))), "elsewhere.wav")},
                headers={"Authorization": f"Bearer {token}"},
                content_type="multipart/form-data",
            )
            assert response.status_code == 202
            page.get_by_role("button", name="Refresh").click()
            page.locator(".job-title", has_text="elsewhere.wav").wait_for()
            titles = page.locator(".job-title").all_inner_texts()
            assert titles[0] == "Analysis: elsewhere.wav" and len(titles) == 3
        finally:
            context.close()


def hide_events_route(page: Any) -> None:
    """Makes the server look like one without ``/events``: the route is left out
    of the OpenAPI document and answers 404, as on a server without it."""
    import json

    def openapi(route: Any) -> None:
        response = route.fetch()
        spec = response.json()
        spec["paths"] = {k: v for k, v in spec["paths"].items() if not k.endswith("/events")}
        route.fulfill(response=response, body=json.dumps(spec))

    page.route("**/openapi.json", openapi)
    page.route(
        re.compile(r".*/api/v1/jobs/[^/]+/events$"),
        lambda route: route.fulfill(
            status=404,
            content_type="application/json",
            body='{"code": "not_found", "status": 404, "message": "Not found."}',
        ),
    )


def run_job_in_background(app: Flask, job_id: str) -> None:
    import threading

    from app.services import separation

    def work() -> None:
        with app.app_context():
            separation.run_job(job_id)

    threading.Thread(target=work, daemon=True).start()


def test_expired_access_token_is_refreshed(page: Any, live_app: Flask) -> None:
    """The page swaps an expired access token for a new one with the refresh token."""
    from datetime import timedelta

    from flask_jwt_extended import create_access_token, decode_token

    email = sign_up(page)
    session = page.evaluate("JSON.parse(sessionStorage.getItem('ams.session'))")
    assert session["email"] == email
    with live_app.app_context():
        claims = decode_token(session["access"])
        expired = create_access_token(
            identity=claims["sub"],
            additional_claims={"rjti": claims["rjti"]},
            expires_delta=timedelta(seconds=-60),
        )
    page.evaluate(
        "(token) => { const s = JSON.parse(sessionStorage.getItem('ams.session')); s.access = token;"
        " sessionStorage.setItem('ams.session', JSON.stringify(s)); }",
        expired,
    )
    with page.expect_response(lambda r: r.url.endswith("/api/v1/auth/refresh")) as refreshed:
        page.reload()
    assert refreshed.value.status == 200
    page.locator("#jobs-empty").wait_for(state="visible")  # the job list loaded
    assert page.evaluate("JSON.parse(sessionStorage.getItem('ams.session')).access") != expired

    # Logging out revokes the session: the old refresh token is refused.
    page.get_by_role("button", name="Log out").click()
    page.locator("#auth-view").wait_for(state="visible")
    assert page.evaluate("sessionStorage.getItem('ams.session')") is None
    status = page.evaluate(
        "(t) => fetch('/api/v1/auth/refresh', {method: 'POST', headers: {Authorization: 'Bearer ' + t}})"
        ".then((r) => r.status)",
        session["refresh"],
    )
    assert status == 401

    # A wrong password says so and keeps the user on the log-in form.
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    page.locator("#auth-error").wait_for(state="visible")
    assert page.locator("#app-view").is_hidden()
    assert page.problems == []


def test_transcript_follows_the_audio(page: Any) -> None:
    """Transcribe a speech clip (bundled tiny.en) and play it: the spoken line lights up."""
    sign_up(page)
    page.locator("input[name=kind][value=transcription]").check()
    clip = ROOT / "tests" / "data" / "speech" / "clip1.mp3"
    page.locator("#file-input").set_input_files(str(clip))
    page.get_by_role("button", name="Transcribe", exact=True).click()
    job = page.locator(".job").first
    job.locator(".badge", has_text="Done").wait_for(timeout=120_000)
    lines = job.locator(".transcript li")
    lines.first.wait_for()
    assert lines.count() >= 1
    audio = job.locator(".play-along audio")
    audio.evaluate("(a) => a.play()")
    current = job.locator(".transcript li.current")
    current.wait_for(timeout=15_000)
    assert current.locator("button").get_attribute("aria-current") == "true"
    assert current.inner_text().strip()
    audio.evaluate("(a) => a.pause()")
    screenshot(page, "transcript")
    assert page.problems == []


def test_chords_follow_the_audio(page: Any, tmp_path: Path) -> None:
    """Analyse a rendered song and play it along: the chord under the playhead lights up."""
    from tests.support import scores

    parts = {
        "A": ["C:maj", "A:min", "F:maj", "G:7"],
        "B": ["A:min", "D:min7", "E:7", "A:min"],
        "C": ["F:maj7", "G:7", "C:maj7", "C:maj"],
    }
    score = scores.arrangement([], bpm=120, form="ABABCB", parts=parts)
    song = tmp_path / "song.wav"
    song.write_bytes(wav_bytes(scores.render_numpy(score, SR)))
    sign_up(page)
    page.locator("input[name=kind][value=analysis]").check()
    page.locator("#file-input").set_input_files(str(song))
    page.get_by_role("button", name="Analyse", exact=True).click()
    job = page.locator(".job").first
    job.locator(".badge", has_text="Done").wait_for(timeout=60_000)
    timeline = job.locator(".chord-timeline")
    timeline.wait_for()
    assert timeline.locator(".sections-track .segment").all_inner_texts() == [
        "A",
        "B (chorus)",
        "A",
        "B (chorus)",
        "C",
        "B (chorus)",
    ]
    assert timeline.locator(".chords-track .segment").first.inner_text() == "C"
    audio = job.locator(".play-along audio")
    audio.wait_for()
    audio.evaluate("(a) => { a.currentTime = 2.5; return a.play(); }")
    current = timeline.locator(".chords-track .segment.current")
    page.wait_for_function(
        "(el) => el.textContent.startsWith('Chord: Am')",
        arg=timeline.locator(".now-chord").element_handle(),
        timeout=15_000,
    )
    assert current.inner_text() == "Am"
    audio.evaluate("(a) => a.pause()")
    facts = job.locator(".analysis-box dl").inner_text()
    assert "Time signature" in facts and "4/4" in facts
    screenshot(page, "chords")
    assert page.problems == []


@pytest.fixture(scope="module")
def musicgen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.musicgen_models import build_tiny_musicgen

    root = tmp_path_factory.mktemp("musicgen-models")
    build_tiny_musicgen(root / "musicgen" / "musicgen-small")
    return root


def test_generate_again_with_the_same_seed(
    chromium: Any, eager_app: Callable[..., Flask], musicgen_dir: Path
) -> None:
    """Generate from a prompt (tiny random MusicGen), then "Generate again with
    this seed": a second job with the drawn seed and the very same audio."""
    app = eager_app(MODELS_DIR=str(musicgen_dir), ALLOW_MODEL_DOWNLOAD=False)
    with LiveServer(app) as live:
        context = chromium.new_context(base_url=live.url, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)
        try:
            sign_up(page)
            page.locator("input[name=kind][value=generation]").check()
            assert page.locator("#file-area").is_hidden()  # text only: no file needed
            page.get_by_label("Describe the music").fill("calm piano")
            page.get_by_label("Duration (s)").fill("1")
            page.get_by_role("button", name="Generate", exact=True).click()

            first = page.locator(".job").first
            first.locator(".badge", has_text="Done").wait_for()
            first.locator(".stem.ready").wait_for()
            params = first.locator(".generation-box dl").inner_text()
            seed = re.search(r"Seed\s+(\d+)", params)
            assert seed and "calm piano" in params
            screenshot(page, "generation")

            first.get_by_role("button", name="Generate again with this seed").click()
            page.locator(".job").nth(1).wait_for()
            second = page.locator(".job").first
            second.locator(".badge", has_text="Done").wait_for()
            assert f"Seed\n{seed.group(1)}" in second.locator(".generation-box dl").inner_text()

            # Same seed, same parameters: the same samples.
            token = page.evaluate("JSON.parse(sessionStorage.getItem('ams.session')).access")
            client = app.test_client()
            headers = {"Authorization": f"Bearer {token}"}
            audio = []
            for card in (first, second):
                job_id = card.get_attribute("data-job-id")
                job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json
                body = client.get(job["result"]["files"][0]["url"], headers=headers).data
                audio.append(sf.read(io.BytesIO(body))[0])
            assert audio[0].shape == audio[1].shape and (audio[0] == audio[1]).all()

            # "Edit settings" loads them into the form instead.
            second.get_by_role("button", name="Edit settings").click()
            assert page.locator("#gen-seed").input_value() == seed.group(1)
            assert page.locator("#gen-prompt").input_value() == "calm piano"
            assert page.evaluate("document.activeElement.id") == "gen-prompt"
        finally:
            context.close()


def test_errors_are_shown_where_they_belong(page: Any) -> None:
    """Keyboard-only log-in; the API's refusals appear on the form: a file that
    is not audio, and a field error next to its field (aria-invalid)."""
    sign_up(page)
    page.get_by_role("button", name="Log out").click()
    page.get_by_label("E-mail").wait_for(state="visible")
    email = page.evaluate("document.querySelector('#whoami').textContent")
    page.get_by_label("E-mail").focus()
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")  # submits with the first button: Log in
    page.locator("#app-view").wait_for(state="visible")
    assert page.evaluate("document.activeElement.id") == "new-job-title"

    # Not audio: the server's 415 message, in the form's alert.
    page.locator("#file-input").set_input_files(
        files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"just some text\n" * 50}]
    )
    page.get_by_role("button", name="Separate", exact=True).click()
    alert = page.locator("#form-error")
    alert.wait_for(state="visible")
    assert "audio" in alert.inner_text().lower()
    assert page.locator(".job").count() == 0

    # A field error lands next to its field; editing the field clears it.
    page.locator("input[name=kind][value=transcription]").check()
    page.locator("#file-input").set_input_files(str(ROOT / "tests/data/speech/clip2.flac"))
    page.locator("#tr-language").fill("xx")
    page.get_by_role("button", name="Transcribe", exact=True).click()
    language = page.locator("#tr-language")
    page.locator("#tr-language-error").wait_for()
    assert language.get_attribute("aria-invalid") == "true"
    assert "tr-language-error" in language.get_attribute("aria-describedby")
    language.fill("en")
    assert language.get_attribute("aria-invalid") is None
    assert alert.is_hidden()
    screenshot(page, "form-errors", full_page=False)
    assert page.problems == []


@pytest.fixture(scope="module")
def karaoke_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random Demucs repo, plus ``mdx_extra``: a model that hears the
    whole input as vocals (a trained Demucs does that with a speech clip; the
    random ones do not, and their "vocals" are too quiet to transcribe)."""
    from tests.support.demucs_repo import add_vocals_passthrough, build_repo

    root = tmp_path_factory.mktemp("karaoke-models")
    add_vocals_passthrough(build_repo(root / "demucs"), "mdx_extra")
    return root


@pytest.mark.parametrize("model", ["mdx_extra", "mdx"], ids=["lyrics", "no-lyrics"])
def test_karaoke_results(
    chromium: Any,
    tmp_path: Path,
    eager_app: Callable[..., Flask],
    karaoke_models_dir: Path,
    model: str,
) -> None:
    """A karaoke package from a speech clip: instrumental and vocals players,
    the lyrics following the instrumental as it plays (or, when the vocals
    stem is silent, a plain "no lyrics" message), and every lyrics file
    downloadable with the same content the API serves."""
    app = eager_app(MODELS_DIR=str(karaoke_models_dir), ALLOW_MODEL_DOWNLOAD=False)
    with LiveServer(app) as live:
        context = chromium.new_context(
            base_url=live.url, viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        page = context.new_page()
        page.set_default_timeout(60_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            sign_up(page)
            page.locator("input[name=kind][value=karaoke]").check()
            page.locator("#ka-sep-model").select_option(model)
            page.locator("#file-input").set_input_files(str(ROOT / "tests/data/speech/clip1.mp3"))
            page.get_by_role("button", name="Make karaoke", exact=True).click()
            job = page.locator(".job").first
            job.locator(".badge", has_text="Done").wait_for(timeout=120_000)
            assert "Karaoke: clip1.mp3" in job.locator(".job-title").inner_text()

            token = page.evaluate("JSON.parse(sessionStorage.getItem('ams.session')).access")
            headers = {"Authorization": f"Bearer {token}"}
            client = app.test_client()
            result = client.get(f"/api/v1/jobs/{job.get_attribute('data-job-id')}", headers=headers)
            result = result.json["result"]
            assert result["has_vocals"] is (model == "mdx_extra")

            # Two players, each with a waveform; the instrumental carries the lyrics tags.
            stems = job.locator(".stem")
            stems.nth(1).wait_for()
            assert [s.get_attribute("data-stem") for s in stems.all()] == ["instrumental", "vocals"]
            caption = stems.first.locator("figcaption").inner_text()
            assert caption.startswith("Instrumental (with lyrics tags)")
            for stem in stems.all():
                page.wait_for_function(
                    "(el) => el.classList.contains('ready')", arg=stem.element_handle()
                )
            instrumental = stems.first.locator("audio")

            lines = job.locator(".transcript[aria-label=Lyrics] li")
            if result["lines"]:
                texts = lines.locator(".text").all_inner_texts()
                assert texts == [line["text"] for line in result["lines"]]
                instrumental.evaluate("(a) => a.play()")
                current = job.locator(".transcript li.current")
                current.wait_for(timeout=15_000)
                assert current.locator("button").get_attribute("aria-current") == "true"
                assert result["lines"][0]["text"] in current.inner_text()
                # Clicking a line plays from there.
                last = result["lines"][-1]
                lines.last.locator("button").click()
                page.wait_for_function(
                    "([a, t]) => a.currentTime >= t",
                    arg=[instrumental.element_handle(), last["start"]],
                )
                lines.last.locator("button[aria-current=true]").wait_for(timeout=15_000)
                instrumental.evaluate("(a) => a.pause()")
            else:
                assert lines.count() == 0
                assert job.get_by_text("No vocals found: the package has no lyrics.").is_visible()

            # Every lyrics file downloads with the content the API serves.
            served = {f["name"]: f for f in result["files"]}
            for name in ("lyrics.lrc", "lyrics.words.lrc", "lyrics.srt", "lyrics.vtt", "sync.json"):
                with page.expect_download() as info:
                    job.get_by_role("button", name=f"Download {name}", exact=True).click()
                saved = tmp_path / name
                info.value.save_as(saved)
                assert info.value.suggested_filename == f"clip1 - {name}"
                expected = client.get(served[name]["url"], headers=headers).data
                assert saved.read_bytes() == expected
                assert expected or (name == "lyrics.srt" and not result["lines"])
            lrc = (tmp_path / "lyrics.lrc").read_text()
            for line in result["lines"]:
                assert f"]{line['text']}" in lrc
            with page.expect_download() as info:
                job.locator("button[data-download=archive]").click()
            info.value.save_as(tmp_path / "package.zip")
            with zipfile.ZipFile(tmp_path / "package.zip") as bundle:
                assert sorted(bundle.namelist()) == sorted(served)
            screenshot(page, f"karaoke-{'lyrics' if result['lines'] else 'no-lyrics'}")
            assert errors == []
        finally:
            context.close()


def test_karaoke_with_the_lyrics_box_highlights_words(
    chromium: Any, eager_app: Callable[..., Flask], karaoke_models_dir: Path
) -> None:
    """Lyrics typed in the karaoke form are timed word by word: the lyrics
    list shows the author's lines, and while the instrumental plays the word
    being sung is highlighted in the current line."""
    app = eager_app(MODELS_DIR=str(karaoke_models_dir), ALLOW_MODEL_DOWNLOAD=False)
    typed = ["She opened the heavy door", "and stepped out into the cold rain."]
    with LiveServer(app) as live:
        context = chromium.new_context(base_url=live.url, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            sign_up(page)
            page.locator("input[name=kind][value=karaoke]").check()
            page.locator("#ka-sep-model").select_option("mdx_extra")
            page.locator("#ka-lyrics").fill("\n".join(typed))
            page.locator("#file-input").set_input_files(str(ROOT / "tests/data/speech/clip1.mp3"))
            page.get_by_role("button", name="Make karaoke", exact=True).click()
            job = page.locator(".job").first
            job.locator(".badge", has_text="Done").wait_for(timeout=120_000)
            lines = job.locator(".transcript[aria-label=Lyrics] li")
            lines.nth(1).wait_for()
            assert lines.locator(".text").all_inner_texts() == typed
            words = job.locator(".transcript .word")
            assert words.count() == len(" ".join(typed).split())
            instrumental = job.locator(".stem").first.locator("audio")
            job.locator(".stem.ready").first.wait_for()
            instrumental.evaluate("(a) => a.play()")
            highlighted = job.locator(".transcript .word-current")
            highlighted.wait_for(timeout=15_000)
            assert highlighted.count() == 1
            assert highlighted.inner_text() in " ".join(typed).split()
            instrumental.evaluate("(a) => a.pause()")
            screenshot(page, "karaoke-aligned-lyrics")
            assert errors == []
        finally:
            context.close()


def test_karaoke_leaves_the_separation_model_to_the_server(
    chromium: Any, tmp_path: Path, eager_app: Callable[..., Flask], vocal_models_dir: Path
) -> None:
    """The karaoke picker starts on "Server's choice" (GET /api/v1/models'
    ``vocals_default``) with the reason under it; left there, the request names
    no model and the job runs the server's pick, which its card shows."""
    app = eager_app(MODELS_DIR=str(vocal_models_dir), ALLOW_MODEL_DOWNLOAD=False)
    song = tmp_path / "song.wav"
    song.write_bytes(wav_bytes(0.5 * sine_and_clicks(seconds=1.0)))
    with LiveServer(app) as live:
        context = chromium.new_context(base_url=live.url, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        try:
            sign_up(page)
            page.locator("input[name=kind][value=karaoke]").check()
            select = page.locator("#ka-sep-model")
            page.locator("#ka-sep-model option[value='']").wait_for(state="attached")
            assert select.input_value() == ""
            assert select.locator("option:checked").inner_text() == (
                "Server's choice (mel_band_roformer_kim)"
            )
            hint = page.locator('[data-describes="ka-sep-model"]')
            choice = hint.locator('[data-fact="choice"]').inner_text()
            assert choice.startswith("Server's choice: mel_band_roformer_kim. Default: the best")
            assert "10.98 dB" in choice
            assert "Mel-Band RoFormer" in hint.locator('[data-fact="description"]').inner_text()
            select.select_option("htdemucs")
            assert hint.locator('[data-fact="choice"]').count() == 0
            select.select_option("")

            page.locator("#file-input").set_input_files(str(song))
            page.get_by_role("button", name="Make karaoke", exact=True).click()
            job = page.locator(".job").first
            job.locator(".badge", has_text="Done").wait_for(timeout=120_000)
            meta = job.locator(".job-meta")
            assert meta.inner_text().startswith("mel_band_roformer_kim · ")
            assert meta.get_attribute("title").startswith("default: the best vocals model")

            page.locator("input[name=kind][value=transcription]").check()
            assert page.locator("#tr-isolate-hint").inner_text() == (
                "Vocals separated by mel_band_roformer_kim, the server's choice."
            )
            assert errors == []
        finally:
            context.close()


def test_the_model_description_helps_choose(page: Any, server: LiveServer) -> None:
    """Under the model select: the description, then stems and rate, the
    published SDR per benchmark with a link to its source, the weights'
    licence and the speed measured here (GET /api/v1/models)."""
    sign_up(page)
    page.locator("input[name=kind][value=separation]").check()
    page.locator("#sep-model option[value=htdemucs]").wait_for(state="attached")
    page.locator("#sep-model").select_option("htdemucs")
    hint = page.locator('[data-describes="sep-model"]')

    def fact(name: str) -> Any:
        return hint.locator(f'[data-fact="{name}"]')

    assert "Hybrid Transformer" in fact("description").inner_text()
    assert fact("stems").inner_text() == "Stems: drums, bass, other, vocals · 44.1 kHz"
    quality = fact("quality").inner_text()
    assert "Multisong (MVSep)" in quality and "vocals 8.24 dB" in quality
    source = fact("quality").locator("a")
    assert "ZFTurbo/Music-Source-Separation-Training" in source.get_attribute("href")
    assert fact("license").inner_text().startswith("Weights licence: MIT")
    assert "bench/separation.py" in fact("speed").inner_text()
    screenshot(page, "model-facts-htdemucs", full_page=False)

    page.locator("#sep-model").select_option("hpss")
    assert "input's own rate" in fact("stems").inner_text()
    assert fact("quality").inner_text() == "Published SDR: none for these weights"
    assert fact("license").inner_text() == "Weights licence: none (no weights)"
    assert "s per second of audio" in fact("speed").inner_text()

    page.locator("#sep-model").select_option("mdx")
    assert fact("quality").inner_text() == "Published SDR: none for these weights"
    speed = fact("speed").inner_text()
    assert "2.37 s per second of audio" in speed and "bench/model_speed.py" in speed

    # A generation model: its weights' licence, and no speed line (none measured).
    page.locator("input[name=kind][value=generation]").check()
    page.locator("#gen-model").select_option("facebook/musicgen-medium")
    gen = page.locator('[data-describes="gen-model"]')
    gen.locator('[data-fact="license"]', has_text="CC-BY-NC-4.0").wait_for()
    assert gen.locator('[data-fact="speed"]').count() == 0


def test_a_registered_engine_is_offered_with_its_options(
    chromium: Any, tmp_path: Path, models_dir: Path
) -> None:
    """A model family registered on the server (the mid/side engine of
    tests/support/midside.py) is in the model picker with the inputs of its
    own options, and a job started from the page runs it with what was typed.
    The options shown are each model's: switching models swaps them."""
    from app.models import registry
    from tests.conftest import make_app
    from tests.support.midside import MidSideEngine

    engine = registry.register(MidSideEngine())
    app = make_app(tmp_path / "data", MODELS_DIR=str(models_dir), ALLOW_MODEL_DOWNLOAD=False)
    app.extensions["celery"].conf.task_always_eager = True
    try:
        with LiveServer(app) as live:
            context = chromium.new_context(
                base_url=live.url, viewport={"width": 1280, "height": 900}
            )
            page = context.new_page()
            page.set_default_timeout(30_000)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            try:
                sign_up(page)
                page.locator("#sep-model option[value=midside]").wait_for(state="attached")
                page.locator("#sep-model").select_option("midside")
                page.locator("#sep-advanced summary").click()
                gain = page.get_by_label("Side gain")
                assert gain.get_attribute("min") == "0" and gain.get_attribute("max") == "4"
                assert gain.get_attribute("placeholder") == "1"
                hint = page.locator(f"#{gain.get_attribute('aria-describedby')}")
                assert "side stem" in hint.inner_text()
                assert page.locator("#sep-options input").count() == 1
                assert page.locator("#sep-advanced summary").inner_text() == (
                    "Quality (midside options)"
                )
                page.locator("#sep-model").select_option("htdemucs")
                assert page.get_by_label("Segment (s)").get_attribute("max") == "7.8"
                assert page.get_by_label("Shifts").get_attribute("placeholder") == "1"
                assert page.get_by_label("Side gain").count() == 0
                screenshot(page, "engine-options-demucs")
                page.locator("#sep-model").select_option("midside")
                page.get_by_label("Side gain").fill("0.5")
                screenshot(page, "engine-options", full_page=False)

                song = wav_bytes(sine_and_clicks(1.0))
                drop_file(page, "#dropzone", "song.wav", song, "audio/wav")
                page.get_by_role("button", name="Separate", exact=True).click()
                job = page.locator(".job").first
                job.locator(".badge", has_text="Done").wait_for()
                stems = job.locator(".stem")
                stems.nth(1).wait_for()
                assert [s.get_attribute("data-stem") for s in stems.all()] == ["mid", "side"]
                token = page.evaluate("JSON.parse(sessionStorage.getItem('ams.session')).access")
                answer = app.test_client().get(
                    f"/api/v1/jobs/{job.get_attribute('data-job-id')}",
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert answer.json["model"] == "midside"
                assert answer.json["params"]["side_gain"] == 0.5
                assert errors == []
            finally:
                context.close()
    finally:
        registry.unregister(engine)


def test_the_page_offers_the_kinds_the_server_runs(
    chromium: Any, eager_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job kinds the page offers come from the server's job-kind table
    (through its OpenAPI document): a server without generation shows no
    Generate choice, and labels come from the kind's name."""
    from app import job_kinds

    table = tuple(kind for kind in job_kinds.JOB_KINDS if kind.name != "generation")
    monkeypatch.setattr(job_kinds, "JOB_KINDS", table)
    with LiveServer(eager_app()) as live:
        context = chromium.new_context(base_url=live.url, viewport={"width": 1280, "height": 900})
        try:
            page = context.new_page()
            sign_up(page)
            kind = page.locator('input[name="kind"][value="generation"]')
            kind.wait_for(state="hidden")
            assert page.locator('input[name="kind"][value="separation"]').is_visible()
            assert page.locator('input[name="kind"][value="karaoke"]').is_visible()
        finally:
            context.close()
