"""Telling a database outage from a bug, and riding a short outage out.

PostgreSQL restarting (a failover, a crash, a deploy) or SQLite locked past
its busy timeout is not a bug in a request or a job: the API answers ``503``
with ``Retry-After`` (app/errors_http.py) and a worker waits for the database
to come back before it gives up a job's state (app/services/runner.py).
Everything else SQLAlchemy raises (a constraint, a missing table) stays an
internal error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import exc as sa_exc

from app.extensions import db

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long a worker keeps retrying a write it must not lose (a job's claim,
# its result, its failure) before it gives up and leaves the job to the reaper.
OUTAGE_PATIENCE_SECONDS = 120.0

# SQLite reports a missing table or column as an OperationalError, like a
# locked or unreadable file: those are the schema's problem, not an outage.
_SCHEMA_MESSAGES = ("no such table", "no such column", "has no column named", "syntax error")


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot be reached (or used) right
    now, rather than that the statement is wrong: a refused or dropped
    connection, a server shutting down, a pool with no connection to give
    within ``pool_timeout``, SQLite's ``database is locked``."""
    if isinstance(exc, (sa_exc.TimeoutError, sa_exc.DisconnectionError)):
        return True
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
        message = str(exc.orig).lower()
        return not any(part in message for part in _SCHEMA_MESSAGES)
    return False


def describe(exc: BaseException) -> str:
    """One line for a log: the driver's first line, without SQL or parameters."""
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0]
    return f"{type(orig).__name__}: {first}"[:300]


def reset_session() -> None:
    """Roll the session back after a failed statement; the connection, if the
    driver reported it gone, is already invalidated, and ``pool_pre_ping``
    replaces it at the next checkout."""
    try:
        db.session.rollback()
    except Exception as exc:  # the rollback itself can find the server gone
        log.debug("rollback after a database error failed: %s", describe(exc))
        db.session.remove()


def retry_while_unavailable(
    step: Callable[[], T], what: str, *, patience: float = OUTAGE_PATIENCE_SECONDS
) -> T:
    """Run ``step`` (which commits its own transaction); while the database is
    unavailable, roll back and run it again, backing off up to 2 s between
    tries, for up to ``patience`` seconds. Any other error, or an outage
    longer than that, is raised.

    ``step`` must be safe to repeat: a connection lost during COMMIT leaves it
    unknown whether the transaction landed, so a compare-and-set step must
    recognise its own earlier success (see app/services/runner.py).
    """
    deadline = time.monotonic() + patience
    delay = 0.25
    warned = False
    while True:
        try:
            result = step()
        except Exception as exc:
            if not is_unavailable(exc) or time.monotonic() + delay > deadline:
                raise
            reset_session()
            if not warned:
                log.warning(
                    "%s: the database is unavailable (%s); retrying for up to %g s",
                    what,
                    describe(exc),
                    patience,
                )
                warned = True
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        if warned:
            log.warning("%s: the database is back", what)
        return result
