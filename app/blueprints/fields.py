"""Marshmallow fields shared by the resource schemas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import current_app
from flask_smorest.fields import Upload
from marshmallow import ValidationError
from werkzeug.datastructures import FileStorage

from app.services.job_document import UTCDateTime

__all__ = ["FileUpload", "UTCDateTime", "check_output_format", "known_model"]


class FileUpload(Upload):
    """A multipart file part. flask-smorest's ``Upload`` only documents the
    field; this one also refuses a plain text value sent under the same name."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> FileStorage:
        if not isinstance(value, FileStorage):
            raise ValidationError("Must be a file: send it as a multipart file part.")
        return value


def check_output_format(data: dict[str, Any]) -> None:
    """Format options that cannot go together (schemas call this in ``validates_schema``)."""
    if data.get("output_format") == "flac" and data.get("bit_depth") == "32f":
        raise ValidationError("FLAC stores 16 or 24 bits; use wav for 32f.", "bit_depth")


def known_model(kind: str, label: str = "model") -> Callable[[str], None]:
    """A validator for a ``kind`` model name (``separation``, ``transcription``,
    ``generation``): requests name models from GET /api/v1/models, never paths,
    and an unknown one is refused before anything is stored."""
    from app.models import registry

    def validate(name: str) -> None:
        if registry.find(kind, name, current_app.config) is None:
            raise ValidationError(f"Unknown {label}; GET /api/v1/models lists them.")

    return validate
