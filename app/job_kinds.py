"""The job-kind table: every kind of job, declared once.

A job kind is a route that accepts it, a service that runs it, a Celery task
that calls the service, a queue that task goes to, and the settings whose sum
is its hard time limit. Each kind names those here, and everything else is
derived from this table: Celery's task routes and time limits, the queues a
worker consumes, ``?kind=`` on the job list, the queue a job waits in
(``queue_position``, metrics, maintenance), the blueprints registered, and
the ``Result`` schema of the OpenAPI document. ``tests/test_job_kinds.py``
fails when any of them disagrees with the table.

References are dotted names, not imports: this module sits below the layers
that define the routes, services and tasks (it is read by the configuration),
so it can name them without importing them.

Adding a kind: write its service (``run_job(job_id)``), its task (a
``shared_task`` named as below that calls the service) and its route module
(a blueprint with ``PREFIX`` and ``blp``), then add one entry here
(docs/architecture.md, "Add a job kind").
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JobKind:
    name: str
    # The module of the blueprint that creates jobs of this kind (``PREFIX``, ``blp``).
    route: str
    # The Celery task's name, which is also ``<module>.<function>`` of a task
    # module unless ``task_function`` says otherwise.
    task: str
    queue: str
    # Settings (seconds) whose sum is the task's hard time limit: a pipeline
    # gets the sum of its steps'.
    time_limits: tuple[str, ...]
    # The service function the task runs: ``<module>.<function>(job_id)``.
    runner: str
    # The schema documenting this kind's ``result`` fields, ``<module>.<class>``
    # (merged into the OpenAPI document's ``Result``); None: only the files.
    result_schema: str | None = None
    # Names the task had before: messages a previous version queued under
    # them still run, routed and time-limited as the task is (each such name
    # is a ``shared_task`` beside the task, which nothing publishes any more).
    former_tasks: tuple[str, ...] = ()

    @property
    def task_module(self) -> str:
        return self.task.rsplit(".", 1)[0]


JOB_KINDS: tuple[JobKind, ...] = (
    JobKind(
        name="separation",
        route="app.blueprints.separations",
        task="app.tasks.separation.separate",
        queue="separation",
        time_limits=("SEPARATION_TIME_LIMIT",),
        runner="app.services.separation.run_job",
        result_schema="app.blueprints.separations.SeparationResultSchema",
    ),
    JobKind(
        name="transcription",
        route="app.blueprints.transcriptions",
        task="app.tasks.transcription.transcribe",
        queue="transcription",
        time_limits=("TRANSCRIPTION_TIME_LIMIT",),
        runner="app.services.transcription.run_job",
        result_schema="app.blueprints.transcriptions.TranscriptionResultSchema",
    ),
    JobKind(
        name="alignment",
        route="app.blueprints.alignments",
        task="app.tasks.alignment.align",
        queue="transcription",
        time_limits=("TRANSCRIPTION_TIME_LIMIT",),
        runner="app.services.alignment.run_job",
        result_schema="app.blueprints.alignments.AlignmentResultSchema",
    ),
    # Pipelines go where their heaviest step runs.
    JobKind(
        name="karaoke",
        route="app.blueprints.karaoke",
        task="app.tasks.pipelines.karaoke",
        queue="separation",
        time_limits=("SEPARATION_TIME_LIMIT", "TRANSCRIPTION_TIME_LIMIT"),
        runner="app.services.karaoke.run_job",
    ),
    JobKind(
        name="analysis",
        route="app.blueprints.analyses",
        task="app.tasks.analysis.analyze",
        queue="transcription",
        time_limits=("TRANSCRIPTION_TIME_LIMIT",),
        runner="app.services.analysis.run_job",
        result_schema="app.blueprints.analyses.AnalysisResultSchema",
        former_tasks=("app.tasks.pipelines.analyze",),
    ),
    JobKind(
        name="generation",
        route="app.blueprints.generations",
        task="app.tasks.generation.generate",
        queue="generation",
        time_limits=("GENERATION_TIME_LIMIT",),
        runner="app.services.generation.run_job",
    ),
)

# Everything below reads the table at each call, so what is derived always
# agrees with it (tests extend it to show that one entry is enough).


def names() -> tuple[str, ...]:
    """Every kind's name, in the table's order (``?kind=``, metrics)."""
    return tuple(kind.name for kind in JOB_KINDS)


def job_queues() -> tuple[str, ...]:
    """The queues jobs go to, each once, in the table's order."""
    return tuple(dict.fromkeys(kind.queue for kind in JOB_KINDS))


def get(name: str) -> JobKind:
    """The kind called ``name``; KeyError for a name the table does not have."""
    for kind in JOB_KINDS:
        if kind.name == name:
            return kind
    raise KeyError(name)


def queue_for(name: str) -> str:
    return get(name).queue


def kinds_in_queue(queue: str) -> tuple[str, ...]:
    return tuple(kind.name for kind in JOB_KINDS if kind.queue == queue)


def task_routes() -> dict[str, dict[str, str]]:
    """Celery ``task_routes`` for the job tasks (under their former names too)."""
    return {
        name: {"queue": kind.queue}
        for kind in JOB_KINDS
        for name in (kind.task, *kind.former_tasks)
    }


def time_limit_keys() -> dict[str, tuple[str, ...]]:
    """Task name (former names too) -> the settings whose sum is its hard time limit."""
    return {
        name: kind.time_limits for kind in JOB_KINDS for name in (kind.task, *kind.former_tasks)
    }


def task_modules() -> tuple[str, ...]:
    return tuple(dict.fromkeys(kind.task_module for kind in JOB_KINDS))


def route_modules() -> tuple[str, ...]:
    return tuple(dict.fromkeys(kind.route for kind in JOB_KINDS))
