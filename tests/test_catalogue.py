"""What GET /api/v1/models says to help a person choose a model: stems and
rate, published quality with benchmark and source, weight licence, measured speed."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from app.models import catalogue_facts

ZFTURBO = catalogue_facts.ZFTURBO


def _models(client: FlaskClient) -> dict[str, dict[str, Any]]:
    body = client.get("/api/v1/models").json
    assert body is not None
    return {m["name"]: m for m in body["models"]}


def test_htdemucs_has_published_sdr_licence_and_measured_speed(client: FlaskClient) -> None:
    htdemucs = _models(client)["htdemucs"]
    assert htdemucs["stems"] == ["drums", "bass", "other", "vocals"]
    assert htdemucs["sample_rate"] == 44100
    quality = {(q["stem"], q["benchmark"]): q for q in htdemucs["quality"]}
    assert quality["vocals", "Multisong (MVSep)"] == {
        "stem": "vocals",
        "sdr_db": 8.24,
        "benchmark": "Multisong (MVSep)",
        "source": ZFTURBO,
    }
    assert quality["average", "Multisong (MVSep)"]["sdr_db"] == 9.16
    assert {q["stem"] for q in htdemucs["quality"]} == {
        "vocals",
        "drums",
        "bass",
        "other",
        "average",
    }
    assert htdemucs["license"] == "MIT"
    assert "facebookresearch/demucs" in htdemucs["license_source"]
    speed = htdemucs["speed"]
    assert 0 < speed["real_time_factor"] < 10
    assert "bench/separation.py" in speed["measured"] and "2-core CPU" in speed["measured"]


def test_htdemucs_ft_cites_each_benchmark(client: FlaskClient) -> None:
    ft = _models(client)["htdemucs_ft"]
    figures = {(q["stem"], q["benchmark"]): (q["sdr_db"], q["source"]) for q in ft["quality"]}
    assert figures["vocals", "Multisong (MVSep)"] == (8.38, ZFTURBO)
    assert figures["average", "MUSDB18-HQ test set"] == (9.0, catalogue_facts.DEMUCS_README)


def test_every_separation_model_says_stems_rate_quality_licence_and_speed(
    client: FlaskClient,
) -> None:
    """Each key is there for every model (null where nothing is published or
    measured), every figure names its benchmark and source, every rate is
    given or explained."""
    for model in _models(client).values():
        for key in ("quality", "license", "license_source", "speed", "sample_rate_note"):
            assert key in model, (model["name"], key)
        if model["kind"] != "separation":
            continue
        assert model["stems"], model["name"]
        assert model["sample_rate"] or model["sample_rate_note"], model["name"]
        assert model["license"], model["name"]
        for figure in model["quality"] or []:
            assert set(figure) == {"stem", "sdr_db", "benchmark", "source"}
            assert figure["benchmark"] and figure["source"].startswith("https://")


def test_models_without_published_figures_say_null(client: FlaskClient) -> None:
    models = _models(client)
    for name in ("mdx", "mdx_extra", "mdx_q", "mdx_extra_q"):
        assert models[name]["quality"] is None
        assert models[name]["license"] == "MIT"


def test_every_published_separation_model_has_a_speed_measured_here(
    client: FlaskClient,
) -> None:
    """A relative speed for every separation model the catalogue offers, each
    naming the bench/ script and the 2-core machine that measured it."""
    separation = [m for m in _models(client).values() if m["kind"] == "separation"]
    assert {"hdemucs_mmi", "mdx", "mdx_extra", "mdx_q", "mdx_extra_q"} <= {
        m["name"] for m in separation
    }
    for model in separation:
        speed = model["speed"]
        assert speed is not None, model["name"]
        assert speed["real_time_factor"] > 0, model["name"]
        assert "bench/" in speed["measured"] and "2-core CPU" in speed["measured"]


def test_demucs_v3_speeds_come_from_one_run_with_htdemucs_and_quantised_share_them(
    client: FlaskClient,
) -> None:
    """hdemucs_mmi and the mdx bags were timed in one bench/model_speed.py run
    with htdemucs; the diffq-quantised bags run the same float networks, so
    they carry their unquantised bag's figure and say so."""
    models = _models(client)
    speeds = {n: models[n]["speed"] for n in ("hdemucs_mmi", "mdx", "mdx_extra")}
    assert len({s["measured"] for s in speeds.values()}) == 1
    assert "htdemucs" in speeds["mdx"]["measured"]
    # bags of four cost more than the one-model hdemucs_mmi
    assert speeds["mdx"]["real_time_factor"] > speeds["hdemucs_mmi"]["real_time_factor"]
    assert speeds["mdx_extra"]["real_time_factor"] > speeds["hdemucs_mmi"]["real_time_factor"]
    for quantised, plain in (("mdx_q", "mdx"), ("mdx_extra_q", "mdx_extra")):
        speed = models[quantised]["speed"]
        assert speed["real_time_factor"] == speeds[plain]["real_time_factor"]
        assert "diffq" in speed["measured"]


def test_hpss_has_no_weights_no_published_sdr_and_the_inputs_rate(client: FlaskClient) -> None:
    hpss = _models(client)["hpss"]
    assert hpss["stems"] == ["harmonic", "percussive"]
    assert hpss["sample_rate"] is None
    assert "input" in hpss["sample_rate_note"]
    assert hpss["quality"] is None
    assert hpss["license"] == "none (no weights)"
    assert hpss["license_source"] is None
    assert 0 < hpss["speed"]["real_time_factor"] < 1


def test_musicgen_weights_are_non_commercial(client: FlaskClient) -> None:
    models = _models(client)
    for name in ("facebook/musicgen-small", "facebook/musicgen-melody"):
        assert models[name]["license"] == "CC-BY-NC-4.0"
        assert "facebookresearch/audiocraft" in models[name]["license_source"]
        assert models[name]["quality"] is None and models[name]["speed"] is None


def test_whisper_weights_are_mit(client: FlaskClient) -> None:
    tiny = _models(client)["tiny.en"]
    assert tiny["license"] == "MIT"
    assert "openai/whisper" in tiny["license_source"]


def test_local_demucs_model_states_what_is_not_known(demucs_app: Any) -> None:
    """A model only in the local repo: no figures, no licence stated."""
    models = _models(demucs_app.test_client())
    local = models["mybag"]
    assert local["quality"] is None and local["license"] == "not stated"
    assert local["sample_rate"] is None and local["sample_rate_note"]


def test_the_openapi_document_describes_the_fields(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").json
    assert spec is not None
    schemas = spec["components"]["schemas"]
    model = next(
        s
        for name, s in schemas.items()
        if name.startswith("Model") and "quality" in s.get("properties", {})
    )
    for key in ("quality", "license", "license_source", "speed", "sample_rate_note"):
        assert model["properties"][key].get("description"), key


def test_roformer_vocal_models_cite_their_multisong_vocals(client: FlaskClient) -> None:
    models = _models(client)
    for name, sdr in (("bs_roformer_viperx_1297", 10.87), ("mel_band_roformer_kim", 10.98)):
        model = models[name]
        assert model["stems"] == ["vocals", "instrumental"] and model["sample_rate"] == 44100
        assert model["quality"] == [
            {"stem": "vocals", "sdr_db": sdr, "benchmark": "Multisong (MVSep)", "source": ZFTURBO}
        ]
        assert model["license"] == "not stated"
    # About 2.6 dB cleaner vocals than htdemucs on the same benchmark.
    htdemucs = {q["stem"]: q["sdr_db"] for q in models["htdemucs"]["quality"]}
    assert models["mel_band_roformer_kim"]["quality"][0]["sdr_db"] - htdemucs["vocals"] > 2.5


def test_roformer_speed_comes_from_the_run_that_measured_htdemucs(client: FlaskClient) -> None:
    """The RoFormer real-time factors and htdemucs's were measured in one run of
    bench/separation.py, on the same 60 s input, so they compare."""
    models = _models(client)
    htdemucs = models["htdemucs"]["speed"]
    assert "60 s" in htdemucs["measured"]
    for name in ("bs_roformer_viperx_1297", "mel_band_roformer_kim"):
        speed = models[name]["speed"]
        assert speed["measured"] == htdemucs["measured"]
        assert speed["real_time_factor"] > htdemucs["real_time_factor"]
