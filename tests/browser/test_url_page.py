"""Songs by address from the web page: the URL box under the drop zone sends
``url`` instead of a file, several addresses (with or without files) start one
batch, and an address the server refuses is marked on the box."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from tests.browser.test_batch_page import drop_files, song_rows
from tests.browser.test_web_page import sign_up
from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.browser import LiveServer, screenshot
from tests.support.media_server import MediaServer


@pytest.fixture
def media() -> Iterator[MediaServer]:
    with MediaServer() as server:
        server.file("/music/first.wav", wav_bytes(sine_and_clicks(1.0)))
        server.file("/music/second.wav", wav_bytes(sine_and_clicks(1.5)))
        yield server


@pytest.fixture
def live_app(eager_app: Callable[..., Flask], media: MediaServer) -> Flask:
    """The media server (and only it) is exempt from the public-address rule."""
    return eager_app(URL_FETCH_ALLOW_HOSTS=media.authority)


def _separate_with_hpss(page: Any) -> None:
    page.locator("input[name=kind][value=separation]").check()
    page.locator("#sep-model").select_option("hpss")
    page.locator("#sep-format").select_option("wav")


def test_an_address_is_separated(page: Any, server: LiveServer, media: MediaServer) -> None:
    sign_up(page)
    _separate_with_hpss(page)
    page.get_by_label("Or the audio's address").fill(media.url("/music/first.wav"))
    with page.expect_response(lambda r: r.url.endswith("/api/v1/separations")) as answer:
        page.get_by_role("button", name="Separate", exact=True).click()
    assert answer.value.status == 202
    job = page.locator(".job").first
    job.locator(".badge", has_text="Done").wait_for(timeout=60_000)
    assert "first.wav" in job.locator(".job-title").inner_text()
    assert job.locator(".stem").count() == 2  # hpss: harmonic and percussive
    assert media.requests == ["/music/first.wav"]


def test_addresses_and_a_file_make_one_batch(
    page: Any, server: LiveServer, media: MediaServer
) -> None:
    sign_up(page)
    _separate_with_hpss(page)
    drop_files(page, "#dropzone", [("dropped.wav", wav_bytes(sine_and_clicks(1.0)), "audio/wav")])
    page.locator("#file-chosen").filter(has_text="dropped.wav").wait_for()
    page.locator("#url-input").fill(
        f"{media.url('/music/first.wav')}\n{media.url('/music/second.wav')}\n"
    )
    with page.expect_response(lambda r: r.url.endswith("/api/v1/batches")) as answer:
        page.get_by_role("button", name="Separate", exact=True).click()
    assert answer.value.status == 202
    batch = page.locator(".batch").first
    batch.locator(".badge", has_text="Done").first.wait_for(timeout=60_000)
    rows = song_rows(batch)
    assert sorted(row["name"] for row in rows) == ["dropped.wav", "first.wav", "second.wav"]
    assert {row["status"] for row in rows} == {"succeeded"}, rows


def test_a_refused_address_is_marked_on_the_box(page: Any, server: LiveServer) -> None:
    sign_up(page)
    _separate_with_hpss(page)
    box = page.locator("#url-input")
    box.fill("http://10.0.0.1/song.wav")  # a private address: refused before any job exists
    page.get_by_role("button", name="Separate", exact=True).click()
    page.locator("#url-input-error").wait_for()
    screenshot(page, "url-refused")
    assert box.get_attribute("aria-invalid") == "true"
    assert page.locator(".job").count() == 0
