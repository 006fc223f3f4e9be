"""``GET /metrics``: Prometheus text exposition (see app/metrics.py for what is in it).

Open by default, like most exporters: keep it off the public internet at the
proxy, or set ``METRICS_TOKEN`` and configure Prometheus with
``authorization: {credentials: <token>}`` (a Bearer token).
"""

from __future__ import annotations

import hmac

from flask import Response, current_app, request
from flask.typing import ResponseReturnValue

from app import metrics
from app.access import METRICS_SCHEME
from app.blueprints import Blueprint
from app.errors_http import error_response

blp = Blueprint("metrics", __name__, description="Prometheus metrics.")


@blp.route("/metrics", methods=["GET"])
@blp.response(
    200,
    description="Prometheus text format 0.0.4: jobs by kind and status, queue depth and "
    "age, live workers, job durations, model load times, HTTP latency by route.",
    content_type="text/plain",
)
@blp.alt_response(401, description="No Bearer token matching `METRICS_TOKEN` was sent.")
# Without METRICS_TOKEN the document drops this requirement and the 401
# (``unenforced_schemes`` in app/access.py).
@blp.doc(security=[{METRICS_SCHEME: []}])
def scrape() -> ResponseReturnValue:
    """Metrics for Prometheus (Bearer `METRICS_TOKEN` when that is set)."""
    token = current_app.config.get("METRICS_TOKEN")
    if token:
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.strip().encode(), token.encode()
        ):
            body, status = error_response(401, "A valid metrics token is required.")
            body.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return body, status
    return Response(metrics.render(current_app), mimetype=None, content_type=metrics.CONTENT_TYPE)
