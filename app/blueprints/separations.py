"""Separation jobs: upload a song, get stems."""

from __future__ import annotations

import re
from typing import Any

from flask import current_app
from marshmallow import (
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)
from marshmallow.utils import missing
from webargs.fields import DelimitedList

from app import audio
from app.blueprints import Blueprint
from app.blueprints.fields import FileUpload, check_output_format
from app.blueprints.jobs import CallbackSchema, upload_route
from app.models import ensemble_engine, registry
from app.models.engines import Engine, Option, OptionError
from app.services import separation

KIND = "separation"
PREFIX = "/separations"
blp = Blueprint("separations", __name__, description="Split a song into stems (asynchronous jobs).")


class SeparationResultSchema(Schema):
    """A separation's ``result`` fields beside ``files`` (app/job_kinds.py)."""

    stems = fields.List(fields.String(), metadata={"description": "Separation."})
    sample_rate = fields.Integer(metadata={"description": "Separation."})


class ModelNames(fields.String):
    """One model name, or several for an ensemble: the field repeated, or names
    separated by commas or ``+``. Loads as the names joined with ``+``, the
    name an ensemble's job stores."""

    is_multiple = True  # webargs: every value of a repeated multipart field

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        values = value if isinstance(value, list) else [value]
        names: list[str] = []
        for item in values:
            text = super()._deserialize(item, attr, data, **kwargs)
            names += [part.strip() for part in re.split(r"[,+]", text) if part.strip()]
        return ensemble_engine.joined(names)


def check_model(name: str) -> None:
    """A model or ensemble requests may name; an ensemble that is not one says why."""
    if registry.find(KIND, name, current_app.config) is not None:
        return
    ensembles = [e for e in registry.engines(KIND) if isinstance(e, ensemble_engine.EnsembleEngine)]
    if ensemble_engine.JOIN in name and ensembles:
        why = ensembles[0].problem(name, current_app.config)
        if why:
            raise ValidationError(why)
    raise ValidationError("Unknown model; GET /api/v1/models lists them.")


def option_field(option: Option, families: list[Engine]) -> fields.Field:
    """The request field of an engine option: its type and the widest bounds any
    family allows (a model's own bounds are checked per request)."""
    description = f"{', '.join(f.label for f in families)}: {option.description}"
    metadata: dict[str, Any] = {"description": description}
    if option.default is not None:
        metadata["description"] += f" Default {option.default}."
        metadata["default"] = option.default
        metadata["example"] = option.default
    validators: list[Any] = []
    if option.minimum is not None or option.maximum is not None:
        validators.append(validate.Range(min=option.minimum, max=option.maximum))
    if option.choices is not None:
        validators.append(validate.OneOf(option.choices))
    kinds: dict[str, type[fields.Field]] = {
        "integer": fields.Integer,
        "number": fields.Float,
        "boolean": fields.Boolean,
        "string": fields.String,
    }
    return kinds[option.type](validate=validators, metadata=metadata)


# One field per option of the separation families registered at import time:
# they are what the OpenAPI document lists.
EngineOptionsSchema = Schema.from_dict(
    {
        name: option_field(option, families)
        for name, (option, families) in registry.all_options(KIND).items()
    },
    name="EngineOptionsSchema",
)
OPTION_FIELDS = tuple(EngineOptionsSchema._declared_fields)


class SeparationFormSchema(CallbackSchema, EngineOptionsSchema):  # type: ignore[misc,valid-type]  # a class Schema.from_dict builds at run time
    file = FileUpload(
        required=True,
        metadata={"description": "Audio file (mp3, wav, flac, ogg, opus, m4a, ...)."},
    )
    model = ModelNames(
        load_default=None,
        validate=check_model,
        metadata={
            "description": (
                f"Model name from GET /api/v1/models (default {registry.DEFAULTS[KIND]}); "
                "its entry lists the options it takes. An ensemble is a preset's name, or "
                f"{ensemble_engine.MIN_MEMBERS} to {ensemble_engine.MAX_MEMBERS} model names "
                "(repeat the field, or separate them with commas or '+'); its stems are "
                "combined by `ensemble_algorithm`."
            ),
            "example": "htdemucs",
        },
    )
    two_stems = fields.String(
        load_default=None,
        metadata={
            "description": "Karaoke mode: this source and no_<source> (mix minus source).",
            "example": "vocals",
        },
    )
    stems = DelimitedList(
        fields.String(),
        metadata={"description": "Only these sources (comma-separated); default all."},
    )
    clip_mode = fields.String(
        load_default="rescale",
        validate=validate.OneOf(["rescale", "clamp", "none"]),
        metadata={
            "description": "Avoiding clipping: rescale each stem if it would clip, clamp, or none.",
            "example": "rescale",
        },
    )
    analyze = fields.Boolean(
        load_default=False,
        metadata={
            "description": "Also analyse the song (`result.analysis`: key, tempo, beats, "
            "chords, meter and bars, sections, tuning, loudness) and add the chord chart "
            "files `chords.txt` and `chords.lab`."
        },
    )
    output_format = fields.String(
        load_default="wav",
        validate=validate.OneOf(audio.OUTPUT_FORMATS),
        metadata={"description": "Format of the stems.", "example": "wav"},
    )
    bit_depth = fields.String(
        load_default="16",
        validate=validate.OneOf(audio.BIT_DEPTHS),
        metadata={"description": "WAV: 16, 24 or 32f (float); FLAC: 16 or 24.", "example": "16"},
    )
    mp3_bitrate = fields.Integer(
        load_default=320,
        validate=validate.OneOf(audio.MP3_BITRATES),
        metadata={"description": "MP3 bitrate in kbit/s.", "example": 320},
    )

    @pre_load
    def _set_aside_late_options(self, data: Any, **_: Any) -> Any:
        """Options of families registered after this schema was built (a plugin,
        a test's engine) have no field of their own: they are taken out of the
        unknown-field check here, and validated against the model below."""
        late = set(registry.all_options(KIND)) - set(self.fields)
        if not any(name in data for name in late):
            return data
        return {key: data[key] for key in data if key not in late}

    @validates_schema(pass_original=True)
    def _check_combinations(self, data: dict[str, Any], original_data: Any, **_: Any) -> None:
        check_output_format(data)
        name = data.get("model") or registry.DEFAULTS[KIND]
        entry = registry.describe(KIND, name, current_app.config)
        if entry is None:
            return
        check_model_options(name, entry["options"], given_options(data, original_data))
        stems = entry.get("stems")
        if stems == []:
            raise ValidationError("These models have no stem in common.", "model")
        if stems:
            if data.get("two_stems") and data["two_stems"] not in stems:
                raise ValidationError(f"Must be one of: {', '.join(stems)}.", "two_stems")
            unknown = [s for s in data.get("stems") or [] if s not in stems]
            if unknown:
                raise ValidationError(f"Must be among: {', '.join(stems)}.", "stems")
        if data.get("two_stems") and data.get("stems"):
            raise ValidationError("Give either stems or two_stems.", "stems")

    @post_load(pass_original=True)
    def _add_late_options(self, data: dict[str, Any], original_data: Any, **_: Any) -> Any:
        for name, (option, _families) in registry.all_options(KIND).items():
            raw = _raw(original_data, name)
            if name not in self.fields and raw is not None:
                try:
                    data[name] = option.convert(raw)
                except OptionError as exc:  # only when the model was not found to check it
                    raise ValidationError(str(exc), name) from None
        return data


def _raw(original: Any, name: str) -> Any:
    """A field as the request sent it; ``None`` when absent (webargs' proxy
    answers ``missing``)."""
    value = original.get(name) if hasattr(original, "get") else None
    return None if value is missing else value


def given_options(data: dict[str, Any], original: Any) -> dict[str, Any]:
    """The engine options a request gives: loaded by their fields, or raw for
    options that have no field (see ``_set_aside_late_options``)."""
    given = {}
    # Fields of a family unregistered since (tests) are options no model takes.
    for name in dict.fromkeys([*registry.all_options(KIND), *OPTION_FIELDS]):
        if data.get(name) is not None:
            given[name] = data[name]
        elif name not in data and _raw(original, name) is not None:
            given[name] = _raw(original, name)
    return given


def check_model_options(name: str, accepted: list[Option], given: dict[str, Any]) -> None:
    """Refuse (422, naming the field) an option model ``name`` does not take or
    a value outside its own bounds."""
    by_name = {option.name: option for option in accepted}
    errors: dict[str, list[str]] = {}
    for field, value in given.items():
        option = by_name.get(field)
        if option is None:
            takes = ", ".join(by_name) or "none"
            errors[field] = [f"Model '{name}' does not take this option (it takes: {takes})."]
            continue
        try:
            option.convert(value)
        except OptionError as exc:
            errors[field] = [f"Model '{name}': {exc}"]
    if errors:
        raise ValidationError(errors)


create_separation = upload_route(
    blp,
    SeparationFormSchema,
    separation.submit,
    summary="Start a separation job.",
    description=(
        "Upload audio as multipart field `file`; the job runs in the background. Poll the "
        "`Location` URL until `status` is `succeeded`, then download `result.files[].url` "
        "or `result.archive_url`.\n\n"
        "```\ncurl -H 'Authorization: Bearer $TOKEN' -F file=@song.mp3 -F output_format=flac "
        "http://localhost:5000/api/v1/separations\n```"
    ),
)
