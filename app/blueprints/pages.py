"""Pages served to browsers: the landing page and Swagger UI's assets (no CDN)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, send_from_directory
from swagger_ui_bundle import swagger_ui_path

bp = Blueprint("pages", __name__)


@bp.route("/")
def index() -> Response:
    return send_from_directory(current_app.static_folder or "static", "index.html", max_age=0)


@bp.route("/docs/assets/<path:filename>")
def swagger_assets(filename: str) -> Response:
    return send_from_directory(swagger_ui_path, filename, max_age=3600)
