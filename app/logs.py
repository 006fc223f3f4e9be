"""Log lines as text or JSON, each carrying the request id or job id it belongs to.

``LOG_FORMAT=text`` (the default, readable in ``make run``) or ``json`` (one JSON
object per line, for log shippers such as Loki, Fluent Bit or CloudWatch).

The ids live in context variables: the API sets ``request_id`` for the length of
a request, the worker sets ``job_id`` for the length of a task, and every log
call made meanwhile, by our code or a library, gets them, without passing them
around. Handlers format in the thread that logged, so the context is right.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("job_id", default=None)

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# An incoming X-Request-ID is kept when it is short and plain (a proxy's UUID or
# trace id); anything else could forge or break log lines, so a new one is made.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def request_id_from(header: str | None) -> str:
    """The id for this request: the caller's ``X-Request-ID`` if sane, else a new one."""
    if header and _SANE_REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


@contextlib.contextmanager
def job_context(job_id: str | None) -> Iterator[None]:
    """Every log line inside the block carries ``job_id``."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)


def _context(record: logging.LogRecord) -> dict[str, str]:
    found = {}
    for name, var in (("request_id", request_id_var), ("job_id", job_id_var)):
        value = getattr(record, name, None) or var.get()
        if value:
            found[name] = str(value)
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message,
    request_id/job_id when known, anything passed with ``extra=``, and the
    traceback as one string field."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in entry and not key.startswith("_"):
                entry[key] = value
        entry["process"] = record.process
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The classic line, with ``[request_id=…]`` / ``[job_id=…]`` appended when known."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = _context(record)
        if not context:
            return line
        tags = " ".join(f"{k}={v}" for k, v in context.items())
        first, sep, rest = line.partition("\n")  # keep a traceback below the tags
        return f"{first} [{tags}]{sep}{rest}"


def make_formatter(log_format: str) -> logging.Formatter:
    if log_format not in LOG_FORMATS:
        raise RuntimeError(
            f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}"
        )
    return JsonFormatter() if log_format == "json" else TextFormatter()


def make_handler(log_format: str, stream: IO[str] | None = None) -> logging.Handler:
    handler: logging.Handler = logging.StreamHandler(stream)
    handler.setFormatter(make_formatter(log_format))
    handler._aimusic = True  # type: ignore[attr-defined]  # our marker: configure() finds its handler by it
    return handler


def configure(level: str, log_format: str = "text") -> None:
    """Send the root logger to stderr in ``log_format``, once per process.

    Leaves alone a root logger someone else already configured (a test runner,
    an application embedding ours); updates our own handler when called again.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if getattr(h, "_aimusic", False)]
    if ours:
        ours[0].setFormatter(make_formatter(log_format))
    elif not root.handlers:
        root.addHandler(make_handler(log_format))
    else:
        make_formatter(log_format)  # still refuse a bad LOG_FORMAT
    root.setLevel(level)
