"""The model catalogue: what a request may name, and what can run here."""

from __future__ import annotations

from typing import Any

from flask import current_app
from marshmallow import Schema, fields, validate

from app.blueprints import Blueprint
from app.models import registry
from app.models.cache import get_cache
from app.services import vocals_model

PREFIX = "/models"
blp = Blueprint("models", __name__, description="Engines and models available to jobs.")


class ModelOptionSchema(Schema):
    """One option a model takes (a form field of its kind's job request)."""

    name = fields.String(metadata={"example": "shifts"})
    type = fields.String(
        validate=validate.OneOf(["integer", "number", "boolean", "string"]),
        metadata={"example": "integer"},
    )
    description = fields.String()
    default = fields.Raw(
        allow_none=True,
        metadata={"description": "The value used when the request leaves it out; null: "
                  "the engine decides (e.g. the model's own).", "example": 1},
    )  # fmt: skip
    minimum = fields.Float(allow_none=True, metadata={"example": 0})
    maximum = fields.Float(allow_none=True, metadata={"example": 10})
    choices = fields.List(fields.String(), allow_none=True)
    unit = fields.String(allow_none=True, metadata={"example": "s"})


class ModelQualitySchema(Schema):
    """One published separation figure for these weights."""

    stem = fields.String(
        metadata={"description": "A stem, or `average`: the mean over the model's four stems "
                  "as the source reports it.", "example": "vocals"}
    )  # fmt: skip
    sdr_db = fields.Float(
        metadata={"description": "Signal-to-distortion ratio in dB; higher is cleaner. Only "
                  "comparable with figures on the same benchmark.", "example": 8.24}
    )  # fmt: skip
    benchmark = fields.String(metadata={"example": "Multisong (MVSep)"})
    source = fields.String(
        metadata={
            "description": "Where the figure is published.",
            "example": "https://github.com/ZFTurbo/Music-Source-Separation-Training/blob/main/"
            "docs/pretrained_models.md",
        }
    )


class ModelSpeedSchema(Schema):
    """A speed measured on this project's machine, not a published figure."""

    real_time_factor = fields.Float(
        metadata={"description": "Processing seconds per second of audio (below 1: faster "
                  "than real time).", "example": 0.021}
    )  # fmt: skip
    measured = fields.String(
        metadata={"description": "How, when and on what it was measured.",
                  "example": "bench/model_speed.py, 2026-12-04, 2-core CPU, 30 s stereo "
                  "44.1 kHz, shifts 1"}
    )  # fmt: skip


class ModelSchema(Schema):
    kind = fields.String(metadata={"example": "separation"})
    name = fields.String(metadata={"example": "htdemucs"})
    engine = fields.String(metadata={"example": "demucs"})
    description = fields.String()
    stems = fields.List(
        fields.String(),
        allow_none=True,
        metadata={"example": ["drums", "bass", "other", "vocals"]},
    )
    available = fields.Boolean(
        metadata={"description": "Weights present here (or none needed): jobs can run offline."}
    )
    downloadable = fields.Boolean(
        metadata={"description": "Missing weights will be downloaded on first use."}
    )
    needs_weights = fields.Boolean()
    sample_rate = fields.Integer(
        allow_none=True,
        metadata={"description": "The rate the model runs at and its stems come out at; null: "
                  "see `sample_rate_note`.", "example": 44100},
    )  # fmt: skip
    sample_rate_note = fields.String(
        allow_none=True,
        metadata={"description": "What the rate is when `sample_rate` is null.",
                  "example": "The input's own rate: hpss does not resample."},
    )  # fmt: skip
    max_segment = fields.Float(
        allow_none=True, metadata={"description": "Largest `segment` this model accepts."}
    )
    requires = fields.String(
        allow_none=True, metadata={"description": "A Python package missing for this model."}
    )
    quality = fields.List(
        fields.Nested(ModelQualitySchema),
        allow_none=True,
        metadata={"description": "Published SDR per stem (separation models), each with its "
                  "benchmark and source; null: none published for these weights."},
    )  # fmt: skip
    license = fields.String(
        allow_none=True,
        metadata={"description": "The licence of the model's weights as their publisher states "
                  "it; `not stated` when it states none, `none (no weights)` for a model "
                  "without weights, null: not checked.", "example": "MIT"},
    )  # fmt: skip
    license_source = fields.String(
        allow_none=True, metadata={"description": "Where the licence is stated."}
    )
    speed = fields.Nested(
        ModelSpeedSchema,
        allow_none=True,
        metadata={"description": "Speed measured here (bench/model_speed.py or "
                  "bench/separation.py, as measured says); null: not measured."},
    )  # fmt: skip
    members = fields.List(
        fields.String(),
        metadata={"description": "Ensembles: the models run on every window, in order.",
                  "example": ["mel_band_roformer_kim", "bs_roformer_viperx_1297"]},
    )  # fmt: skip
    algorithm = fields.String(
        metadata={"description": "Ensembles: how their stems are combined unless a request "
                  "gives `ensemble_algorithm`.", "example": "avg_wave"},
    )  # fmt: skip
    default = fields.Boolean(metadata={"description": "The default of its kind."})
    options = fields.List(
        fields.Nested(ModelOptionSchema),
        metadata={"description": "Options a job with this model may set; any other is refused."},
    )


class LoadedModelSchema(Schema):
    kind = fields.String()
    name = fields.String()
    device = fields.String(metadata={"example": "cpu"})
    bytes = fields.Integer()
    load_seconds = fields.Float()
    idle_seconds = fields.Float()
    uses = fields.Integer()


class VocalsRankSchema(Schema):
    """One model of the vocals ranking."""

    model = fields.String(metadata={"example": "mel_band_roformer_kim"})
    sdr_db = fields.Float(
        metadata={"description": "Its published vocals SDR on `benchmark`.", "example": 10.98}
    )
    available = fields.Boolean(metadata={"description": "Its weights are here."})
    downloadable = fields.Boolean(
        metadata={"description": "Missing weights will be downloaded on first use."}
    )
    ready = fields.Boolean(
        metadata={"description": "It can run here: available, or downloadable (and no "
                  "Python package missing)."}
    )  # fmt: skip


class VocalsDefaultSchema(Schema):
    """The separation model karaoke and isolate_vocals use when the request names none."""

    model = fields.String(metadata={"example": "mel_band_roformer_kim"})
    how = fields.String(
        validate=validate.OneOf([vocals_model.BEST, vocals_model.FALLBACK]),
        metadata={"description": "`best`: the first of `ranking`; `fallback`: a better "
                  "ranked model cannot run here (its weights are missing), so a lower one "
                  "or the separation default runs.", "example": "best"},
    )  # fmt: skip
    reason = fields.String(
        metadata={"example": "default: the best vocals model in the catalogue (vocals "
                  "10.98 dB SDR on Multisong (MVSep))"}
    )  # fmt: skip
    benchmark = fields.String(
        metadata={"description": "The one benchmark the ranking compares.",
                  "example": "Multisong (MVSep)"}
    )  # fmt: skip
    ranking = fields.List(
        fields.Nested(VocalsRankSchema),
        metadata={"description": "Separation models with a `vocals` stem and a published "
                  "vocals SDR on `benchmark`, best first; models without one (local models, "
                  "ensembles, hpss) are never the automatic choice."},
    )  # fmt: skip


class ModelListSchema(Schema):
    models = fields.List(fields.Nested(ModelSchema))
    loaded = fields.List(
        fields.Nested(LoadedModelSchema),
        metadata={"description": "Models resident in the process that answered (API or worker)."},
    )
    defaults = fields.Dict(
        keys=fields.String(),
        values=fields.String(),
        metadata={"example": {"separation": "htdemucs"}},
    )
    vocals_default = fields.Nested(
        VocalsDefaultSchema,
        metadata={"description": "What karaoke and transcription with `isolate_vocals` use "
                  "when the request names no `separation_model`, chosen when a job is "
                  "submitted."},
    )  # fmt: skip


@blp.route("", methods=["GET"])
@blp.response(200, ModelListSchema)
def list_models() -> dict[str, Any]:
    """Every engine with its kind, description, availability and the default per kind,
    and the separation model karaoke and isolate_vocals use by default."""
    config = current_app.config
    models = registry.catalogue(config)
    choice = vocals_model.choose(config, models)
    return {
        "models": models,
        "defaults": registry.DEFAULTS,
        "vocals_default": {
            "model": choice.model,
            **choice.to_dict(),
            "benchmark": vocals_model.BENCHMARK,
            "ranking": [r.to_dict() for r in vocals_model.ranking(models)],
        },
        "loaded": get_cache(config).loaded(),
    }
