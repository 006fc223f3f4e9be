"""Generation jobs: new music from a text prompt (MusicGen)."""

from __future__ import annotations

from typing import Any

from flask import current_app, request, url_for
from marshmallow import ValidationError, fields, validate, validates_schema

from app import audio
from app.access import auth_required, current_user
from app.blueprints import Blueprint
from app.blueprints.fields import FileUpload, check_output_format, known_model
from app.blueprints.jobs import (
    PREFER_PARAMETER,
    CallbackSchema,
    JobSchema,
    answer_with_wait,
)
from app.models import registry
from app.ratelimits import limit_job_creation
from app.records import Job
from app.services import generation

PREFIX = "/generations"
# The audio a generation may take, each as an upload or as ``<role>_url``.
AUDIO_ROLES = ("melody", "continuation")
blp = Blueprint("generations", __name__, description="New music from a text prompt (MusicGen).")


def address_field(description: str) -> fields.String:
    """An audio input given by address (``<role>_url``)."""
    return fields.String(
        load_default=None,
        validate=validate.Length(max=2048),
        metadata={"description": description, "example": "https://example.com/music/tune.mp3"},
    )


class GenerationSchema(CallbackSchema):
    prompt = fields.String(
        required=True,
        validate=validate.Length(min=1, max=500),
        metadata={"example": "upbeat synthwave with a driving bassline"},
    )
    duration = fields.Float(
        load_default=8.0,
        validate=validate.Range(min=1.0, max=120.0),
        metadata={"description": "Seconds (1-120); past 30 s it is generated in windows."},
    )
    model = fields.String(
        load_default=None,
        validate=known_model("generation"),
        metadata={
            "description": "Default facebook/musicgen-small.",
            "example": "facebook/musicgen-small",
        },
    )
    guidance_scale = fields.Float(load_default=3.0, validate=validate.Range(min=0.0, max=20.0))
    temperature = fields.Float(load_default=1.0, validate=validate.Range(min=0.0, max=5.0))
    top_k = fields.Integer(load_default=250, validate=validate.Range(min=0, max=2048))
    top_p = fields.Float(load_default=0.0, validate=validate.Range(min=0.0, max=1.0))
    seed = fields.Integer(
        load_default=None,
        validate=validate.Range(min=0, max=2**63 - 1),
        metadata={"description": "Same seed, parameters and model give the same audio."},
    )
    output_format = fields.String(load_default="wav", validate=validate.OneOf(audio.OUTPUT_FORMATS))
    bit_depth = fields.String(load_default="16", validate=validate.OneOf(audio.BIT_DEPTHS))
    mp3_bitrate = fields.Integer(load_default=320, validate=validate.OneOf(audio.MP3_BITRATES))
    melody_url = address_field(
        "Instead of a `melody` upload: an http or https URL of the audio whose melody "
        "conditions a melody model, fetched by the worker as a job's `url` is."
    )
    continuation_url = address_field(
        "Instead of a `continuation` upload: an http or https URL of the audio the model continues."
    )

    @validates_schema
    def _check(self, data: dict[str, Any], **_: Any) -> None:
        check_output_format(data)
        given = [role for role in AUDIO_ROLES if data.get(role) or data.get(f"{role}_url")]
        if len(given) > 1 or any(data.get(r) and data.get(f"{r}_url") for r in AUDIO_ROLES):
            message = "Give one audio: melody or continuation, as a file or a URL."
            raise ValidationError(message, given[-1] + "_url" if given else "continuation_url")
        if data.get("melody") or data.get("melody_url"):
            name = data.get("model") or registry.DEFAULTS["generation"]
            entry = registry.describe("generation", name, current_app.config)
            if entry is not None and not entry.get("melody"):
                field = "melody" if data.get("melody") else "melody_url"
                raise ValidationError(f"{name} takes no melody; use a -melody model.", field)


class GenerationFormSchema(GenerationSchema):
    melody = FileUpload(
        metadata={"description": "Audio whose melody (chroma) conditions a melody model."}
    )
    continuation = FileUpload(metadata={"description": "Audio the model continues."})


@blp.route("", methods=["POST"])
@auth_required()
@limit_job_creation
@blp.response(202, JobSchema, headers={"Location": {"schema": {"type": "string"}}})
@blp.alt_response(422, description="Invalid fields.")
@blp.doc(
    parameters=[PREFER_PARAMETER],
    requestBody={
        "required": True,
        "content": {
            "application/json": {"schema": "Generation"},
            "multipart/form-data": {"schema": "GenerationForm"},
        },
    },
    description=(
        "JSON body, or multipart with the same fields plus `melody` (melody models) or "
        "`continuation` (an audio prompt the model continues; the result starts with it). "
        "Either audio may instead be given by address, `melody_url` or `continuation_url`, "
        "in JSON or multipart. "
        "The result holds `generated.<format>` and `parameters`, the values actually used "
        "(including the seed drawn when none was given)."
    ),
)
def create_generation() -> tuple[Job, int, dict]:
    """Start a generation job."""
    parser = Blueprint.ARGUMENTS_PARSER
    if request.mimetype == "multipart/form-data":
        data = parser.parse(GenerationFormSchema(), request, location="multipart")
    else:
        data = parser.parse(GenerationSchema(), request, location="json")
    upload = None
    for role in AUDIO_ROLES:
        if data.get(role) is not None:
            upload = data.pop(role)
            data["input_role"] = role
    job = generation.submit(
        current_user, data, upload.stream if upload else None, upload.filename if upload else None
    )
    return answer_with_wait(job, 202, {"Location": url_for("jobs.get_job", job_id=job.id)})
