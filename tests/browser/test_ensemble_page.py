"""Combining models from the web page: the separation form lists the models
that share a stem with the chosen one; ticking some sends the ``model`` field
repeated, which the server runs as one ensemble."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from tests.browser.test_web_page import drop_file, sign_up
from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.browser import LiveServer, screenshot

BS = "bs_roformer_viperx_1297"
MEL = "mel_band_roformer_kim"


@pytest.fixture
def live_app(eager_app: Callable[..., Flask], vocal_models_dir: Path) -> Flask:
    return eager_app(MODELS_DIR=str(vocal_models_dir), ALLOW_MODEL_DOWNLOAD=False)


def _partners(page: Any) -> list[str]:
    return page.locator("#sep-ensemble-models input").evaluate_all(
        "(boxes) => boxes.map((box) => box.value)"
    )


def test_two_models_ticked_run_as_one_ensemble(page: Any, server: LiveServer) -> None:
    sign_up(page)
    page.locator("input[name=kind][value=separation]").check()

    # hpss shares no stem with any other model: nothing to combine it with.
    page.locator("#sep-model").select_option("hpss")
    page.locator("#sep-ensemble summary").click()
    assert _partners(page) == []
    assert page.locator("#sep-ensemble-none").is_visible()

    page.locator("#sep-model").select_option(BS)
    partners = _partners(page)
    assert MEL in partners and "htdemucs" in partners  # Demucs gives vocals, hence an instrumental
    assert "hpss" not in partners and BS not in partners
    assert page.locator("#sep-ensemble-algorithm").is_disabled()  # sent only with an ensemble
    page.get_by_label(MEL).check()
    assert page.locator("#sep-ensemble summary").inner_text() == "Combine models (ensemble of 2)"
    page.locator("#sep-ensemble-algorithm").select_option("uvr_max_spec")
    page.locator("#sep-two-stems").select_option("vocals")
    page.locator("#sep-format").select_option("wav")
    screenshot(page, "ensemble-form")

    drop_file(page, "#dropzone", "song.wav", wav_bytes(sine_and_clicks(2.0)), "audio/wav")
    page.locator("#file-chosen").filter(has_text="song.wav").wait_for()
    with page.expect_response(lambda r: r.url.endswith("/api/v1/separations")) as answer:
        page.get_by_role("button", name="Separate", exact=True).click()
    assert answer.value.status == 202
    job = answer.value.json()
    assert job["model"] == f"{BS}+{MEL}"
    assert job["params"]["ensemble_algorithm"] == "uvr_max_spec"
    card = page.locator(".job").first
    card.locator(".badge", has_text="Done").wait_for(timeout=60_000)
    assert card.locator(".stem").count() == 2  # vocals and instrumental
