"""Many songs at once from the web page: several files (or a folder) become one
``POST /api/v1/batches``, shown as a batch card with a row per song, followed
live, canceled as one and downloaded as one zip (app/static/js/batches.js);
a batch the server refuses says why on the form."""

from __future__ import annotations

import base64
import zipfile
from pathlib import Path
from typing import Any

from tests.browser.test_web_page import run_job_in_background, sign_up
from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.browser import LiveServer, screenshot


def drop_files(page: Any, selector: str, files: list[tuple[str, bytes, str]]) -> None:
    """Drops several files on ``selector`` in one DataTransfer, as a browser does."""
    page.evaluate(
        """([selector, files]) => {
            const transfer = new DataTransfer();
            for (const [name, b64, mime] of files) {
                const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], name, { type: mime }));
            }
            const target = document.querySelector(selector);
            for (const type of ["dragenter", "dragover", "drop"]) {
                target.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
            }
        }""",
        [selector, [[name, base64.b64encode(data).decode(), mime] for name, data, mime in files]],
    )


def song_rows(batch: Any) -> list[dict[str, str]]:
    return batch.locator(".song").evaluate_all(
        """(rows) => rows.map((row) => ({
            name: row.querySelector(".song-name").textContent,
            status: row.dataset.status,
            badge: row.querySelector(".badge").textContent,
            error: row.querySelector(".song-error").hidden ? "" : row.querySelector(".song-error").textContent,
        }))"""
    )


def test_a_multi_file_drop_runs_a_batch(page: Any, server: LiveServer, tmp_path: Path) -> None:
    """Three WAVs and a text file dropped at once: one batch, a row per file;
    the WAVs are separated, the text file fails with the server's reason, and
    "Download all (zip)" saves a folder per separated song."""
    sign_up(page)
    wav = wav_bytes(sine_and_clicks(1.0))
    dropped = [
        ("one.wav", wav, "audio/wav"),
        ("two.wav", wav, "audio/wav"),
        ("notes.txt", b"just some text\n" * 50, "text/plain"),
        ("three.wav", wav, "audio/wav"),
    ]

    # A bad option is refused for the whole batch, next to its field, and
    # nothing is created.
    page.locator("input[name=kind][value=transcription]").check()
    page.locator("#tr-language").fill("xx")
    drop_files(page, "#dropzone", dropped)
    page.locator("#file-chosen").filter(has_text="4 files").wait_for()
    page.get_by_role("button", name="Transcribe", exact=True).click()
    page.locator("#tr-language-error").wait_for()
    assert page.locator("#tr-language").get_attribute("aria-invalid") == "true"
    assert page.locator(".batch").count() == 0

    page.locator("input[name=kind][value=separation]").check()
    page.locator("#sep-model").select_option("hpss")
    page.locator("#sep-format").select_option("wav")
    with page.expect_response(lambda r: r.url.endswith("/api/v1/batches")) as answer:
        page.get_by_role("button", name="Separate", exact=True).click()
    assert answer.value.status == 202

    batch = page.locator(".batch").first
    batch.locator(".badge", has_text="Done with errors").wait_for(timeout=60_000)
    assert page.locator(".batch").count() == 1
    assert batch.locator(".batch-title").inner_text() == "Separation: 4 files"
    rows = song_rows(batch)
    assert [row["name"] for row in rows] == ["one.wav", "two.wav", "notes.txt", "three.wav"]
    assert [row["badge"] for row in rows] == ["Done", "Done", "Failed", "Done"]
    assert rows[2]["error"] == "The file is not an audio or video file. (unsupported_media_type)"
    assert "100%" in batch.locator(".batch-counts").inner_text()
    assert "3 done · 1 failed" in batch.locator(".batch-counts").inner_text()
    assert batch.get_by_role("button", name="Cancel all").is_hidden()
    # Its jobs are jobs too: the job list has a card per input.
    page.locator(".job").nth(3).wait_for()
    assert page.locator(".job").count() == 4
    screenshot(page, "batch")
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than it
    page.wait_for_timeout(300)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(page, "batch-phone")
    page.set_viewport_size({"width": 1280, "height": 900})

    with page.expect_download() as info:
        batch.get_by_role("button", name="Download all (zip)").click()
    archive = tmp_path / "batch.zip"
    info.value.save_as(archive)
    assert info.value.suggested_filename.startswith("batch-")
    with zipfile.ZipFile(archive) as bundle:
        assert sorted(bundle.namelist()) == [
            f"{song}/{stem}.wav"
            for song in ("one", "three", "two")
            for stem in ("harmonic", "percussive")
        ]

    # The batch is still there after a reload (GET /api/v1/batches), and goes
    # with its jobs on Delete.
    page.reload()
    batch = page.locator(".batch").first
    batch.locator(".song").nth(3).wait_for()
    assert batch.locator(".badge").first.inner_text() == "Done with errors"
    page.once("dialog", lambda dialog: dialog.accept())
    batch.get_by_role("button", name="Delete batch").click()
    page.locator("#batches").wait_for(state="hidden")
    page.locator("#jobs-empty").wait_for(state="visible")
    assert page.problems == []


def test_a_folder_batch_is_followed_live_and_canceled(chromium: Any, tmp_path: Path) -> None:
    """A folder chosen with the folder picker sends its audio files only; the
    rows follow the jobs as a worker runs them (the batch's event stream), and
    "Cancel all" cancels the rest."""
    from tests.support.apps import make_app

    folder = tmp_path / "album"
    (folder / "disc 2").mkdir(parents=True)
    (folder / "01 first.wav").write_bytes(wav_bytes(sine_and_clicks(1.0)))
    (folder / "disc 2" / "02 second.wav").write_bytes(wav_bytes(sine_and_clicks(1.0)))
    (folder / "cover.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a picture")
    (folder / "notes.txt").write_text("liner notes\n")

    app = make_app(tmp_path / "data")  # publishes to the SQLite broker; no worker runs
    with LiveServer(app) as live:
        context = chromium.new_context(
            base_url=live.url, viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        page = context.new_page()
        page.set_default_timeout(30_000)
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        try:
            sign_up(page)
            page.locator("#sep-model").select_option("hpss")
            page.locator("#folder-input").set_input_files(folder)
            page.locator("#file-chosen").filter(has_text="2 files").wait_for()
            page.get_by_role("button", name="Separate", exact=True).click()

            batch = page.locator(".batch").first
            batch.locator(".song").nth(1).wait_for()
            rows = song_rows(batch)
            assert [row["name"] for row in rows] == ["01 first.wav", "02 second.wav"]
            assert [row["status"] for row in rows] == ["queued", "queued"]
            assert batch.locator(".badge").first.inner_text() == "Queued"

            # A worker runs the first song: its row and the batch follow.
            first = batch.locator(".song").first
            run_job_in_background(app, first.get_attribute("data-job-id"))
            first.locator(".badge", has_text="Done").wait_for(timeout=60_000)
            batch.locator(".batch-counts", has_text="1 of 2 ended").wait_for()
            assert any(u.endswith("/events") and "/api/v1/batches/" in u for u in requests)
            screenshot(page, "batch-running")

            batch.get_by_role("button", name="Cancel all").click()
            batch.locator(".badge", has_text="Done with errors").wait_for()
            assert [row["badge"] for row in song_rows(batch)] == ["Done", "Canceled"]
            with page.expect_download() as info:
                batch.get_by_role("button", name="Download all (zip)").click()
            info.value.save_as(tmp_path / "batch.zip")
            with zipfile.ZipFile(tmp_path / "batch.zip") as bundle:
                assert {name.split("/")[0] for name in bundle.namelist()} == {"01 first"}
        finally:
            context.close()


def test_a_batch_over_the_size_limit_says_so(chromium: Any, eager_app: Any) -> None:
    """A batch over MAX_BATCH_UPLOAD_MB: the server's 413 batch_too_large
    message is in the form's alert, with what to do; no batch is shown."""
    with LiveServer(eager_app(MAX_BATCH_UPLOAD_MB=1)) as live:
        context = chromium.new_context(base_url=live.url, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(30_000)
        try:
            sign_up(page)
            page.locator("#sep-model").select_option("hpss")
            wav = wav_bytes(sine_and_clicks(6.0))  # ~1 MB each: 2.1 MB in all
            drop_files(
                page, "#dropzone", [("a.wav", wav, "audio/wav"), ("b.wav", wav, "audio/wav")]
            )
            with page.expect_response(lambda r: r.url.endswith("/api/v1/batches")) as answer:
                page.get_by_role("button", name="Separate", exact=True).click()
            assert answer.value.status == 413
            alert = page.locator("#form-error")
            alert.wait_for(state="visible")
            text = alert.inner_text()
            assert "larger than the limit of 1 MB (MAX_BATCH_UPLOAD_MB)" in text
            assert "Send fewer or smaller files at a time." in text
            assert page.locator(".batch").count() == 0
        finally:
            context.close()


def test_a_dropped_folder_is_walked_for_its_audio(page: Any) -> None:
    """A folder dropped on the box (DataTransferItem.webkitGetAsEntry) is read
    through, subfolders too, in path order; its audio files are kept, the cover
    and the notes are not. A browser's drop of a real folder cannot be made from
    a test, so the drop event carries entries built as Chromium hands them over
    (readEntries answering in parts, then with an empty list)."""
    sign_up(page)
    page.evaluate(
        """() => {
            const file = (name, type) => ({
                isFile: true, isDirectory: false, name, fullPath: "/album/" + name,
                file: (ok) => ok(new File(["x"], name.split("/").pop(), { type })),
            });
            const folder = (path, parts) => ({
                isFile: false, isDirectory: true, name: path.split("/").pop(), fullPath: path,
                createReader: () => { const left = parts.slice(); return { readEntries: (ok) => ok(left.shift() || []) }; },
            });
            const album = folder("/album", [
                [file("b side.flac", ""), file("cover.jpg", "image/jpeg")],
                [folder("/album/disc 2", [[file("disc 2/c.mp3", "audio/mpeg")]]), file("a.wav", "audio/wav"), file("notes.txt", "text/plain")],
            ]);
            const transfer = { types: ["Files"], files: [], items: [{ kind: "file", webkitGetAsEntry: () => album, getAsFile: () => null }] };
            const drop = new Event("drop", { bubbles: true, cancelable: true });
            Object.defineProperty(drop, "dataTransfer", { value: transfer });
            document.querySelector("#dropzone").dispatchEvent(drop);
        }"""
    )
    chosen = page.locator("#file-chosen")
    chosen.filter(has_text="3 files").wait_for()
    assert "a.wav, b side.flac, c.mp3." in chosen.inner_text()
    assert page.problems == []
