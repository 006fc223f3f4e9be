"""A batch as clients see it: the JSON of ``GET /api/v1/batches/{id}``, also
what its event stream sends and its webhook delivers (so it lives below the
routes, as app/services/job_document.py does for jobs)."""

from __future__ import annotations

from dataclasses import dataclass, field

from marshmallow import Schema, fields

from app.records import JOB_STATUSES, Batch, Job
from app.services.job_document import JobErrorSchema, UTCDateTime, WebhookSchema, path_for

# queued: no job has started yet; running: some have started or ended, some
# have not; then, once every job has ended: succeeded (all of them),
# completed_with_errors (some succeeded, others failed or were canceled),
# failed (none succeeded and some failed), canceled (all canceled), expired
# (every result has expired and was deleted).
BATCH_STATUSES = (
    "queued",
    "running",
    "succeeded",
    "completed_with_errors",
    "failed",
    "canceled",
    "expired",
)
FINAL_BATCH_STATUSES = BATCH_STATUSES[2:]


@dataclass
class BatchView:
    """A batch with what its jobs say: counts, progress, status and one page of them."""

    batch: Batch
    counts: dict[str, int]
    progress: float
    status: str
    jobs: list[Job] = field(default_factory=list)
    page: int = 1
    per_page: int = 100

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_BATCH_STATUSES

    @property
    def jobs_total(self) -> int:
        return sum(self.counts.values())


class BatchJobSchema(Schema):
    """One job of a batch, in brief: ``url`` has the whole job."""

    id = fields.String()
    filename = fields.Method("_filename", metadata={"example": "song.mp3"})
    status = fields.String(metadata={"enum": list(JOB_STATUSES)})
    progress = fields.Float(metadata={"description": "0..1"})
    error = fields.Nested(JobErrorSchema, allow_none=True)
    url = fields.Method("_url")

    def _filename(self, job: Job) -> str:
        return str((job.input or {}).get("filename") or "")

    def _url(self, job: Job) -> str:
        return path_for("jobs.get_job", job_id=job.id)


class BatchCountsSchema(Schema):
    queued = fields.Integer()
    running = fields.Integer()
    succeeded = fields.Integer()
    failed = fields.Integer()
    canceled = fields.Integer()
    expired = fields.Integer()


class BatchSchema(Schema):
    id = fields.String(
        attribute="batch.id", metadata={"example": "5c1d0a7e-2f4b-4c9e-8d3a-1b2c3d4e5f60"}
    )
    kind = fields.String(attribute="batch.kind", metadata={"example": "separation"})
    status = fields.String(
        metadata={
            "enum": list(BATCH_STATUSES),
            "description": "queued (no job started yet), running, then once every job has "
            "ended: succeeded (all did), completed_with_errors (some succeeded, others "
            "failed or were canceled), failed (none succeeded), canceled (all were "
            "canceled) or expired (all results expired).",
            "example": "running",
        }
    )
    progress = fields.Float(
        metadata={"description": "0..1 over all jobs; an ended job counts as done."}
    )
    inputs = fields.Integer(attribute="batch.inputs", metadata={"description": "Inputs sent."})
    counts = fields.Nested(BatchCountsSchema, metadata={"description": "Jobs per status."})
    params = fields.Dict(attribute="batch.params")
    jobs = fields.List(
        fields.Nested(BatchJobSchema),
        metadata={"description": "This page of the batch's jobs, in input order."},
    )
    page = fields.Integer()
    per_page = fields.Integer()
    jobs_total = fields.Integer()
    jobs_url = fields.Method(
        "_jobs_url", metadata={"description": "Every job of the batch in full (paginated)."}
    )
    created_at = UTCDateTime(attribute="batch.created_at")
    finished_at = UTCDateTime(
        attribute="batch.finished_at",
        allow_none=True,
        metadata={"description": "When its last job ended."},
    )
    callback_url = fields.String(attribute="batch.callback_url", allow_none=True)
    webhook = fields.Nested(
        WebhookSchema,
        attribute="batch.webhook",
        allow_none=True,
        metadata={"description": "The batch webhook's delivery."},
    )
    url = fields.Method("_url")
    events_url = fields.Method("_events_url")
    archive_url = fields.Method("_archive_url")

    def _url(self, view: BatchView) -> str:
        return path_for("batches.get_batch", batch_id=view.batch.id)

    def _events_url(self, view: BatchView) -> str:
        return path_for("batches.batch_events", batch_id=view.batch.id)

    def _archive_url(self, view: BatchView) -> str:
        return path_for("batches.get_batch_archive", batch_id=view.batch.id)

    def _jobs_url(self, view: BatchView) -> str:
        return path_for("jobs.list_jobs", batch_id=view.batch.id)
