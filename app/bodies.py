"""Request bodies: held to their limit whole.

This concerns how a body arrives, not what it says, so it sits below the
views, in the stream Werkzeug reads (``UploadRequest.stream``).
"""

from __future__ import annotations

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wsgi import LimitedStream


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
