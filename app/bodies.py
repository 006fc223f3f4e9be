"""Request bodies: held to their limit whole, and never left half-read on a
connection that is to be reused.

Both concern how a body arrives, not what it says, so they sit below the
views: one in the stream Werkzeug reads (``UploadRequest.stream``), one around
the whole WSGI application (``create_app``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream, get_content_length

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class BoundedBody(LimitedStream):
    """A body without Content-Length (chunked), held to ``max_content_length``.

    Werkzeug's ``readall`` stops at the limit without looking any further, so a
    larger body was cut off there and ``get_json()`` parsed its first part as if
    it were all of it. Finding one more byte after the limit refuses the body
    as a whole, as a Content-Length over the limit is. (Reads of a given size,
    as the multipart parser makes, already fail once past the limit.)
    """

    def readall(self) -> bytes:
        data = super().readall()
        if self.is_exhausted and self._stream.read(1):
            raise RequestEntityTooLarge()
        return data


class _TrackedInput:
    """``wsgi.input`` that notes whether the application read the body to its
    end: with a length, once that many bytes came; chunked, once a read came
    back empty (or read everything)."""

    def __init__(self, stream: IO[bytes], length: int | None) -> None:
        self._stream = stream
        self._left = length
        self.ended = False

    def _note(self, data: bytes, size: int | None, *, line: bool = False) -> bytes:
        if size == 0:
            return data
        if self._left is not None:
            self._left -= len(data)
            self.ended = self._left <= 0
        elif not data or (not line and (size is None or size < 0)):
            self.ended = True
        return data

    def read(self, size: int | None = None) -> bytes:
        return self._note(self._stream.read(size), size)  # type: ignore[arg-type]  # wsgi.input streams take None: read all

    def readline(self, size: int | None = None) -> bytes:
        return self._note(self._stream.readline(size), size, line=True)  # type: ignore[arg-type]  # wsgi.input streams take None: no limit

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return list(self)

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line


def asks_to_close(headers: list[tuple[str, str]]) -> bool:
    return any(
        name.lower() == "connection" and "close" in value.lower().replace(" ", "").split(",")
        for name, value in headers
    )


class CloseAfterUnreadBody:
    """``Connection: close`` on the answer to a request whose body the app did
    not read to its end (refused from its Content-Length, its form, its
    token...).

    Before reading the next request the server must read and throw away the
    rest, which may be hundreds of megabytes or never come: gunicorn tries for
    a few seconds, then drops the connection that its answer had just called
    keep-alive, and the client's next request on it fails. Said up front, the
    client opens a new connection instead. The header is a hop-by-hop one that
    PEP 3333 keeps from applications, so gunicorn honours it only through our
    worker (app/serving.py); the test client and other servers pass it on.
    """

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        length = None if chunked else get_content_length(environ)
        if not chunked and not length:
            return self.app(environ, start_response)
        body = _TrackedInput(environ["wsgi.input"], length)
        environ["wsgi.input"] = body

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if not body.ended and not asks_to_close(headers):
                headers = [*headers, ("Connection", "close")]
            return start_response(status, headers, exc_info)

        return self.app(environ, start)
