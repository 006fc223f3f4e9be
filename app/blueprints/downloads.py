"""Stored files sent with conditional and range requests answered as RFC 9110 says.

Werkzeug's ``send_file`` (3.1) handles the common cases (a single range, a
stale ``If-Range``, ``If-None-Match`` and ``If-Modified-Since`` answered with
``304``) but gets others wrong, each of which a client or a cache acts on:

- a failing ``If-Match`` is a ``412`` that still carries the whole file, and
  ``If-Match: *`` fails for a file that exists;
- ``If-Unmodified-Since`` is ignored;
- a ``Range`` is served before the preconditions are evaluated, so a failing
  ``If-Match`` or a matching ``If-None-Match`` still gets ``206`` (13.2.2 puts
  preconditions first);
- a suffix range longer than the file, several ranges, or a unit other than
  ``bytes`` get ``416``, where the RFC asks for the whole file (14.1.3), allows
  ignoring the header (14.2), or requires ignoring it (14.2);
- ``If-Range`` accepts a weak ETag and any date not older than the file,
  where only an exact strong validator may let a range through (13.1.5).

``FileResponse`` evaluates what Werkzeug gets wrong itself, in the RFC's
order, and hands Werkzeug a request stripped down to what it answers
correctly, so the ``206``, ``304`` and ``416`` answers stay Werkzeug's.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

from flask import Response, current_app, request
from werkzeug.exceptions import PreconditionFailed
from werkzeug.http import is_resource_modified, parse_date, parse_etags, unquote_etag
from werkzeug.utils import send_file as werkzeug_send_file
from werkzeug.wrappers import Request
from werkzeug.wrappers import Response as WerkzeugResponse

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

# 14.1.1: suffix-range = "-" suffix-length
_SUFFIX = re.compile(r"-([0-9]+)")
# 5.6.7: IMF-fixdate, rfc850-date, asctime-date, and nothing else.
_DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_LONG_DAY = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTH = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_TIME = "[0-9]{2}:[0-9]{2}:[0-9]{2}"
_HTTP_DATE = re.compile(
    rf"{_DAY}, [0-9]{{2}} {_MONTH} [0-9]{{4}} {_TIME} GMT"
    rf"|{_LONG_DAY}, [0-9]{{2}}-{_MONTH}-[0-9]{{2}} {_TIME} GMT"
    rf"|{_DAY} {_MONTH} [0-9 ][0-9] {_TIME} [0-9]{{4}}"
)


class FileResponse(Response):
    """A file response whose ``make_conditional`` follows RFC 9110 13.2.2."""

    def make_conditional(
        self,
        request_or_environ: WSGIEnvironment | Request,
        accept_ranges: bool | str = False,
        complete_length: int | None = None,
    ) -> WerkzeugResponse:
        environ = dict(
            request_or_environ.environ
            if isinstance(request_or_environ, Request)
            else request_or_environ
        )
        if environ["REQUEST_METHOD"] in ("GET", "HEAD"):
            message = self._failed_precondition(environ)
            if message is not None:
                self.close()  # the opened file: this response will not be sent
                raise PreconditionFailed(message)
            for answered in ("HTTP_IF_MATCH", "HTTP_IF_UNMODIFIED_SINCE"):
                environ.pop(answered, None)
            if "HTTP_RANGE" in environ:
                self._settle_range(environ, complete_length)
        return super().make_conditional(environ, accept_ranges, complete_length)

    def _failed_precondition(self, environ: WSGIEnvironment) -> str | None:
        """Why ``If-Match`` or ``If-Unmodified-Since`` fails (steps 1 and 2
        of 13.2.2), or ``None``. If-Unmodified-Since only counts without
        If-Match, and is ignored when it is not one valid date (13.1.4)."""
        tags = parse_etags(environ.get("HTTP_IF_MATCH"))
        if tags:
            etag = self._strong_etag()
            if tags.star_tag or (etag is not None and tags.is_strong(etag)):
                return None
            return "If-Match names no current (strong) ETag of the file."
        since = _http_date(environ.get("HTTP_IF_UNMODIFIED_SINCE"))
        modified = self.last_modified
        if since is not None and modified is not None and modified > since:
            return "The file was modified after If-Unmodified-Since."
        return None

    def _settle_range(self, environ: WSGIEnvironment, size: int | None) -> None:
        """Leave in ``environ`` only a Range Werkzeug answers right, or none.

        A ``304`` comes before any range (13.2.2 steps 3-5), and so does an
        ``If-Range`` that does not hold; a Range that is to be ignored goes,
        and a suffix longer than the file asks for all of it.
        """
        not_modified = not is_resource_modified(
            environ, self.headers.get("ETag"), last_modified=self.headers.get("Last-Modified")
        )
        if_range = environ.pop("HTTP_IF_RANGE", None)
        if not_modified or (if_range is not None and not self._if_range_holds(if_range)):
            del environ["HTTP_RANGE"]
            return
        unit, _, specs = environ["HTTP_RANGE"].partition("=")
        ranges = [spec.strip(" \t") for spec in specs.split(",") if spec.strip(" \t")]
        if unit.strip(" \t").lower() != "bytes" or len(ranges) > 1:
            # An unknown unit MUST be ignored, any Range MAY be (14.2): several
            # ranges are sent as the whole file rather than multipart/byteranges.
            del environ["HTTP_RANGE"]
            return
        spec = ranges[0] if ranges else ""
        suffix = _SUFFIX.fullmatch(spec)
        if suffix is not None and size is not None and int(suffix.group(1)) > size:
            spec = "0-"  # 14.1.3: the entire representation
        environ["HTTP_RANGE"] = f"bytes={spec}"

    def _if_range_holds(self, value: str) -> bool:
        """13.1.5: a strong ETag that is the file's, or exactly its Last-Modified."""
        value = value.strip(" \t")
        if value.startswith(('"', "W/")):
            tag, weak = unquote_etag(value)
            return not weak and tag == self._strong_etag()
        date = _http_date(value)
        return date is not None and date == self.last_modified

    def _strong_etag(self) -> str | None:
        tag, weak = self.get_etag()
        return None if weak else tag


def _http_date(value: str | None) -> datetime | None:
    """The date of a field that holds one HTTP-date; ``None`` for anything
    else, a list of dates included, which ``parse_date`` would read leniently
    and 13.1.4 says to ignore."""
    if value is None or _HTTP_DATE.fullmatch(value.strip(" \t")) is None:
        return None
    return parse_date(value)


def send_file(
    path: Path | str,
    *,
    mimetype: str,
    download_name: str,
    as_attachment: bool = True,
    max_age: int = 0,
) -> Response:
    """Flask's ``send_file`` always builds the app's response class; files go
    out as ``FileResponse`` instead, so only downloads change."""
    # response_class=FileResponse: Werkzeug builds the response from it.
    return cast(
        FileResponse,
        werkzeug_send_file(
            path,
            request.environ,
            mimetype=mimetype,
            as_attachment=as_attachment,
            download_name=download_name,
            conditional=True,
            max_age=max_age,
            use_x_sendfile=current_app.config["USE_X_SENDFILE"],
            response_class=FileResponse,
        ),
    )
