"""The jobs resource: routes (``routes.py``), their schemas (``schemas.py``) and
streaming helpers (``streaming.py``). The job's own JSON is
app/services/job_document.py, shared with event streams and webhooks.

Job-kind route modules build their creating route with ``upload_route`` and
take ``CallbackSchema`` into their forms; ``upload_kind`` tells the batch route
how a kind's jobs are created.
"""

from app.blueprints.jobs.routes import (
    PREFIX,
    UploadKind,
    answer_with_wait,
    blp,
    upload_kind,
    upload_route,
)
from app.blueprints.jobs.schemas import PREFER_PARAMETER, CallbackSchema, result_document_schema
from app.blueprints.jobs.streaming import attachment_header, client_gone_check
from app.services.job_document import JobSchema

__all__ = [
    "PREFER_PARAMETER",
    "PREFIX",
    "CallbackSchema",
    "JobSchema",
    "UploadKind",
    "answer_with_wait",
    "attachment_header",
    "blp",
    "client_gone_check",
    "result_document_schema",
    "upload_kind",
    "upload_route",
]
