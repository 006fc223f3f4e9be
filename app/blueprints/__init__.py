"""The HTTP layer: one blueprint per resource, thin routes over service functions."""

from __future__ import annotations

import importlib
from typing import Any

from flask import Flask, Request
from flask_smorest import Api
from flask_smorest import Blueprint as SmorestBlueprint
from flask_smorest.utils import resolve_schema_instance
from marshmallow import Schema
from webargs import missing
from webargs.flaskparser import FlaskParser, is_json_request
from webargs.multidictproxy import MultiDictProxy
from werkzeug.datastructures import MultiDict

from app import json_bodies


class Parser(FlaskParser):
    """Adds the ``multipart`` location: form fields and files in one schema, so a
    multipart upload is validated by one schema and documented as one body.
    JSON bodies are read with app/json_bodies.py."""

    __location_map__ = {
        **FlaskParser.__location_map__,
        "multipart": "load_multipart",
        "batch_options": "load_batch_options",
    }

    def _raw_load_json(self, req: Request) -> Any:
        """webargs' own JSON reading, with the parser of app/json_bodies.py."""
        if not is_json_request(req):
            return missing
        return json_bodies.loads(req.get_data(cache=True))

    def load_multipart(self, req: Request, schema: Schema) -> Any:
        data: MultiDict[str, Any] = req.form.copy()  # text fields, then the files
        data.update(req.files)
        return MultiDictProxy(data, schema)

    def load_batch_options(self, req: Request, schema: Schema) -> Any:
        """A batch's options: its multipart form without ``kind`` and the
        inputs (``file`` parts, ``url`` fields), for the kind's own form
        schema to check."""
        data: MultiDict[str, Any] = req.form.copy()
        data.poplist("kind")
        data.poplist("url")
        data.update(req.files)
        data.poplist("file")
        return MultiDictProxy(data, schema)


class Blueprint(SmorestBlueprint):
    ARGUMENTS_PARSER = Parser()
    DEFAULT_LOCATION_CONTENT_TYPE_MAPPING = {
        **SmorestBlueprint.DEFAULT_LOCATION_CONTENT_TYPE_MAPPING,
        "multipart": "multipart/form-data",
    }

    def arguments(self, schema: Any, *args: Any, **kwargs: Any) -> Any:
        """One schema instance per route, made here: given a class, webargs
        builds one on every request, status polls included. Our schemas keep
        no state between loads, so one instance serves every thread."""
        return super().arguments(resolve_schema_instance(schema), *args, **kwargs)


def register_blueprints(app: Flask, api: Api) -> None:
    """Every blueprint: the job kinds' (app/job_kinds.py) and the others."""
    from app import job_kinds
    from app.access import SECURITY_SCHEMES, unenforced_schemes
    from app.blueprints import (
        auth,
        batches,
        generations,
        health,
        jobs,
        metrics,
        models,
        openai_audio,
        pages,
        webhooks,
    )

    unenforced = unenforced_schemes(app.config)
    for name, scheme in SECURITY_SCHEMES.items():
        if name not in unenforced:
            api.spec.components.security_scheme(name, scheme)
    # The job result's documented shape (its field is computed per job kind).
    api.spec.components.schema("Result", schema=jobs.result_document_schema())
    api.spec.components.schema("Generation", schema=generations.GenerationSchema)
    api.spec.components.schema("GenerationForm", schema=generations.GenerationFormSchema)
    kind_routes = [importlib.import_module(name) for name in job_kinds.route_modules()]
    for module in (auth, jobs, *kind_routes, batches, models, webhooks):
        api.register_blueprint(module.blp, url_prefix=f"/api/v1{module.PREFIX}")
    api.register_blueprint(openai_audio.blp, url_prefix="/v1/audio")
    api.register_blueprint(health.blp)
    api.register_blueprint(metrics.blp)
    app.register_blueprint(pages.bp)
