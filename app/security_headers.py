"""The security headers every answer carries: the app's own responses
(``app/factory.py``) and the error pages gunicorn writes itself
(``app/serving.py``)."""

from __future__ import annotations

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
