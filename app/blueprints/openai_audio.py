"""OpenAI-compatible audio routes, so OpenAI SDKs and tools built for them work.

``POST /v1/audio/transcriptions`` (and ``/translations``) take the same
multipart fields as OpenAI's API, run an ordinary transcription job, wait for
it (up to ``OPENAI_WAIT_SECONDS``) and answer in the requested
``response_format``. A job that runs longer answers ``202`` with its URL,
where the result can be fetched later. Authentication is the service's own:
pass a personal API key (``ams_...``) or an access token as the SDK's ``api_key``.
"""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify, url_for
from marshmallow import EXCLUDE, ValidationError, fields, validate, validates_schema

from app import transcripts
from app.access import auth_required, current_user
from app.blueprints import Blueprint
from app.blueprints.fields import FileUpload
from app.blueprints.jobs import client_gone_check
from app.blueprints.jobs.schemas import with_url_input
from app.blueprints.transcriptions import TranscriptionOptionsSchema, check_english_only
from app.errors_http import error_response
from app.ratelimits import limit_job_creation
from app.records import Job
from app.services import jobs as job_service
from app.services import transcription

blp = Blueprint(
    "openai", __name__, description="OpenAI-compatible transcription (for OpenAI SDKs and tools)."
)
RESPONSE_FORMATS = ("json", "text", "srt", "verbose_json", "vtt")
OPENAI_MODEL_ALIASES = {"whisper-1"}


class OpenAITranscriptionSchema(TranscriptionOptionsSchema):
    class Meta:
        unknown = EXCLUDE  # OpenAI clients may send fields we do not use

    file = FileUpload(required=True)
    model = fields.String(
        required=True,
        metadata={"description": "whisper-1 (the default model) or a model from /api/v1/models."},
    )
    prompt = fields.String(load_default=None, validate=validate.Length(max=1000))
    response_format = fields.String(load_default="json", validate=validate.OneOf(RESPONSE_FORMATS))
    timestamp_granularities = fields.List(
        fields.String(validate=validate.OneOf(["word", "segment"])),
        data_key="timestamp_granularities[]",
        load_default=list,
    )

    @validates_schema
    def _check(self, data: dict[str, Any], **_: Any) -> None:
        if data["model"] in OPENAI_MODEL_ALIASES:
            return
        from app.blueprints.transcriptions import known_whisper

        known_whisper(data["model"])


def _params(form: dict[str, Any], task: str) -> dict[str, Any]:
    model = None if form["model"] in OPENAI_MODEL_ALIASES else form["model"]
    params = {
        "model": model,
        "language": form.get("language"),
        "temperature": form.get("temperature"),
        "initial_prompt": form.get("prompt"),
        "task": task,
        "word_timestamps": "word" in form.get("timestamp_granularities", []),
        "decoding": form.get("decoding"),
        "batch_size": form.get("batch_size"),
        # Not OpenAI's: the audio's address instead of the file, as on every job route.
        "url": form.get("url"),
    }
    try:
        check_english_only(params)
    except ValidationError as exc:
        raise_validation(exc)
    return params


def raise_validation(exc: ValidationError) -> None:
    from app.errors import ServiceError

    raise ServiceError(
        "The request has invalid fields.",
        code="validation_error",
        status=422,
        errors=exc.normalized_messages(),
    )


# A failed job whose cause is the input: what OpenAI answers for bad input.
CLIENT_ERROR_CODES = {"invalid_parameter", "empty_audio", "unsupported_media_type"}


def _ended_without_result(job: Job) -> Any:
    """An OpenAI-style error for a job that ended without a transcript.

    OpenAI SDKs retry 408, 409, 429 and every 5xx, uploading the file again and
    creating a new job each time; a job that has ended will not end otherwise
    on the same input, so these answers are never 5xx, and say
    ``x-should-retry: false`` (which the SDKs honour over the status). The
    input's fault is a 400, as OpenAI answers; a canceled job a 409; any other
    failure (a model not installed, a lost worker, a time limit) a 422 with
    the ``server_error`` type. ``url`` points to the job for the details.
    """
    error = job.error or {"code": f"job_{job.status}", "message": f"The job was {job.status}."}
    code = error["code"]
    if job.status == "canceled":
        status, kind = 409, "invalid_request_error"
    elif code in CLIENT_ERROR_CODES or code.startswith(("audio_", "unsupported_")):
        status, kind = 400, "invalid_request_error"
    else:
        status, kind = 422, "server_error"
    location = url_for("jobs.get_job", job_id=job.id)
    response, status = error_response(status, error["message"], code=code)
    body = response.get_json()
    body["url"] = location
    body["error"] = {"message": error["message"], "type": kind, "code": code}
    answer = jsonify(body)
    answer.status_code = status
    answer.headers["x-should-retry"] = "false"
    answer.headers["Location"] = location
    return answer


def _answer(job: Job, response_format: str) -> Any:
    if not job.is_final:
        location = url_for("jobs.get_job", job_id=job.id)
        response = jsonify({"id": job.id, "status": job.status, "url": location})
        response.status_code = 202
        response.headers["Location"] = location
        return response
    if job.status != "succeeded":
        return _ended_without_result(job)
    result = job.result or {}
    if response_format == "json":
        return jsonify({"text": result.get("text", "")})
    if response_format == "verbose_json":
        task = (job.params or {}).get("task", "transcribe")
        return jsonify(transcripts.openai_verbose_json(result, task=task))
    if response_format == "text":
        return Response(result.get("text", "") + "\n", content_type="text/plain; charset=utf-8")
    return Response(
        transcripts.render(result, response_format),
        content_type=transcripts.CONTENT_TYPES[response_format],
    )


def _handle(form: dict[str, Any], task: str) -> Any:
    upload = form.pop("file", None)
    params = _params(form, task)
    stream, filename = (upload.stream, upload.filename) if upload else (None, None)
    job = transcription.submit(current_user, params, stream, filename)
    seconds = float(current_app.config["OPENAI_WAIT_SECONDS"])
    # OpenAI's API answers with the transcript: this route waits, in one of the
    # places for waiting requests; past their caps it answers 202 and the job URL.
    job, _ = job_service.wait_for(
        current_user, job.id, seconds, refuse=False, client_gone=client_gone_check()
    )
    return _answer(job, form["response_format"])


@blp.route("/transcriptions", methods=["POST"])
@auth_required()
@limit_job_creation
@blp.arguments(with_url_input(OpenAITranscriptionSchema), location="multipart")
@blp.response(200, description="The transcript in `response_format`.")
@blp.alt_response(202, description="Still running after OPENAI_WAIT_SECONDS: poll `url`.")
def openai_transcriptions(form: dict[str, Any]) -> Any:
    """OpenAI-compatible transcription: waits for the job and answers like OpenAI."""
    return _handle(form, "transcribe")


class OpenAITranslationSchema(OpenAITranscriptionSchema):
    pass


@blp.route("/translations", methods=["POST"])
@auth_required()
@limit_job_creation
@blp.arguments(with_url_input(OpenAITranslationSchema), location="multipart")
@blp.response(200, description="English text in `response_format`.")
@blp.alt_response(202, description="Still running after OPENAI_WAIT_SECONDS: poll `url`.")
def openai_translations(form: dict[str, Any]) -> Any:
    """OpenAI-compatible translation to English (needs a multilingual model)."""
    return _handle(form, "translate")
