"""The security headers every answer carries: the app's own responses
(``app/factory.py``) and the error pages gunicorn writes itself
(``app/serving.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from werkzeug.wrappers import Response

HTML_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    # Swagger UI's page starts itself with an inline script.
    "script-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'"
)


# Headers every response carries: no MIME sniffing, no framing, no referrer
# leaks. Gunicorn's own error answers carry them too (app/serving.py).
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"


def add_security_headers(response: Response) -> Response:
    """``SECURITY_HEADERS``, and a content security policy: our pages may load
    their own scripts and styles, anything else loads nothing. A header the
    route set itself is kept. Flask runs it after every route; the status
    poll answered before Flask's dispatch runs it too."""
    headers = response.headers
    # One pass over the headers instead of a scan per name (``setdefault``):
    # this runs on every answer, probes and status polls included.
    present = {name.lower() for name, _value in headers.items()}
    for name, value in SECURITY_HEADERS.items():
        if name.lower() not in present:
            headers.add(name, value)
    if "content-security-policy" not in present:
        headers.add(
            "Content-Security-Policy", HTML_CSP if response.mimetype == "text/html" else API_CSP
        )
    return response
