"""JSON request bodies that cannot break the parser.

``json.loads`` fails on some inputs with errors other than ``JSONDecodeError``:
a body of nested ``[`` deeper than the interpreter's recursion limit raises
``RecursionError``, an integer literal past Python's 4,300-digit conversion
limit a plain ``ValueError``. Flask, webargs and rate-limit key functions only
expect ``JSONDecodeError``, so those bodies surfaced as 500s. Here they are
malformed JSON like any other: a 400 from the route, and the request still
counts against the rate limits it passed on the way.
"""

from __future__ import annotations

import json
from typing import Any

from flask.json.provider import DefaultJSONProvider


def loads(data: str | bytes | bytearray, **kwargs: Any) -> Any:
    try:
        return json.loads(data, **kwargs)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        reason = "JSON nested too deeply"
    except ValueError as exc:  # e.g. "Exceeds the limit (4300 digits) for integer ..."
        reason = f"JSON value out of range ({exc})"
    # A non-empty ``doc``: webargs reads an empty one as "no body at all".
    raise json.JSONDecodeError(reason, doc="<request body>", pos=0) from None


class JSONProvider(DefaultJSONProvider):
    """``app.json``: what ``request.get_json`` parses with."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return loads(s, **kwargs)
