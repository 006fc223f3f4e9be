"""The gunicorn worker the API runs in: ``worker_class`` in gunicorn.conf.py,
``--worker-class`` in ``make run`` (app/embedded.py).

Gunicorn's threaded worker, with one difference a client can see: a response
that says ``Connection: close`` closes the connection. The app says so when it
left a request body unread (app/bodies.py); gunicorn drops hop-by-hop headers
from applications and would announce keep-alive.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gunicorn.http.wsgi import Response
from gunicorn.workers.gthread import ThreadWorker

from app.bodies import StartResponse, WsgiApp, asks_to_close


def _honouring_close(app: WsgiApp) -> WsgiApp:
    """``app``, with a ``Connection: close`` in its answer closing the connection.

    Gunicorn's ``start_response`` is a method of the response it is about to
    write, and what that response announces is decided when its headers go
    out, at the first write: marking it here is in time.
    """

    def serve(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            response = getattr(start_response, "__self__", None)
            if isinstance(response, Response) and asks_to_close(headers):
                response.force_close()
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return serve


class ApiWorker(ThreadWorker):
    """Gunicorn's gthread worker, as the API's clients need it (module docstring)."""

    def load_wsgi(self) -> None:
        super().load_wsgi()
        self.wsgi = _honouring_close(self.wsgi)
