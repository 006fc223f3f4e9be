"""One error shape for every failure a client can see.

Every error leaves the service as ``{"code", "status", "message", "errors"?}``:
``code`` is a stable machine-readable string (``file_too_large``,
``not_found``...), ``status`` the HTTP status, ``message`` a sentence for
people, ``errors`` field-level details when there are any. Job failures reuse
the same ``code`` vocabulary in ``job.error``.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An expected failure with a code a client can act on.

    Raised by service functions (no HTTP knowledge needed); the HTTP layer turns
    it into a JSON error, a task turns it into ``job.error``.
    """

    code: str = "bad_request"
    status: int = 400
    # Seconds a client should wait before trying again (sent as Retry-After).
    retry_after: int | None = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        errors: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.errors = errors

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "status": self.status, "message": self.message}
        if self.errors:
            body["errors"] = self.errors
        return body
