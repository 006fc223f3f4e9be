"""Marshmallow fields shared by the resource schemas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import current_app
from flask_smorest.fields import Upload
from marshmallow import ValidationError, fields
from werkzeug.datastructures import FileStorage

from app.services.job_document import UTCDateTime

__all__ = [
    "LYRICS_FIELD_MAX",
    "FileUpload",
    "LyricsText",
    "UTCDateTime",
    "allow_lyrics_field",
    "check_output_format",
    "known_model",
]

# A lyrics text field may be this large before the form parser refuses it
# (413), so that lyrics over the lyrics limit get its clear 422 instead.
LYRICS_FIELD_MAX = 2 * 1024 * 1024


class FileUpload(Upload):
    """A multipart file part. flask-smorest's ``Upload`` only documents the
    field; this one also refuses a plain text value sent under the same name."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> FileStorage:
        if not isinstance(value, FileStorage):
            raise ValidationError("Must be a file: send it as a multipart file part.")
        return value


class LyricsText(fields.Field):
    """Lyrics as a text field or a file part (``-F lyrics=@song.lrc``): plain
    text, one line per sung line, or an LRC to re-time. Loads as the text,
    refused (422, saying why) when empty, binary, not UTF-8, without words or
    over the limits of ``app.lyrics_input``."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        from app.lyrics_input import MAX_BYTES, LyricsError, parse_lyrics

        raw: bytes | str
        if isinstance(value, FileStorage):
            raw = value.stream.read(MAX_BYTES + 1)
        elif isinstance(value, (str, bytes)):  # bytes: ``flask align`` reads a file
            raw = value
        else:
            raise ValidationError("Must be text, or a text file.")
        try:
            parse_lyrics(raw)
        except LyricsError as exc:
            raise ValidationError(str(exc)) from None
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw.removeprefix("\ufeff")
        return text


def allow_lyrics_field() -> None:
    """``before_request`` of routes that take ``lyrics``: their text field may
    be larger than other fields (``LYRICS_FIELD_MAX``)."""
    from flask import request

    request.max_form_memory_size = LYRICS_FIELD_MAX


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
