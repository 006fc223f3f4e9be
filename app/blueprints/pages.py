"""Pages served to browsers: the web app at ``/`` and Swagger UI's assets (no CDN)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, send_from_directory
from swagger_ui_bundle import swagger_ui_path

bp = Blueprint("pages", __name__)

# The web app loads only its own files (app/static): no inline script or style,
# so unlike Swagger UI's page (app.HTML_CSP) it needs no 'unsafe-inline'.
# Stems are fetched with the Bearer token and played from blob: URLs, and
# waveforms are drawn into canvases, hence blob: for media and images only.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; manifest-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


@bp.route("/")
def index() -> Response:
    """The web app: log in, upload, follow jobs, play and download results."""
    response = send_from_directory(current_app.static_folder or "static", "index.html", max_age=0)
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


@bp.route("/docs/assets/<path:filename>")
def swagger_assets(filename: str) -> Response:
    return send_from_directory(swagger_ui_path, filename, max_age=3600)
