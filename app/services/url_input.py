"""Input by URL: a job's audio fetched from an http(s) address instead of uploaded.

At submit, ``jobs.submit`` checks the URL (``check``: its form, and that its
host resolves only to public addresses) and records it as the job's pending
``input``. The worker fetches it as the first step of the job's run
(``runner.execute`` calls ``fetch_input`` when ``pending_url`` says so), in
the job's turn like the rest of its work, with stage ``downloading``:

- through the SSRF guard webhooks use (``services/outbound.py``): every
  redirect (at most ``MAX_REDIRECTS``) is checked again, and each connection
  goes to the address just checked; ``URL_FETCH_ALLOW_HOSTS`` exempts an
  operator's trusted ``host[:port]`` from the address rule;
- with a size cap (``MAX_UPLOAD_MB``: a ``Content-Length`` over it, or a body
  passing it while it streams) and a time cap for the whole fetch
  (``URL_FETCH_TIMEOUT_SECONDS``, enforced by the guard's ``Watchdog``);
- then with the checks an upload gets (``jobs.check_audio``), the storage
  quota counted on the fetched bytes, and the file adopted as the job's input.

Failures end the job with a code naming what went wrong (``url_unreachable``,
``url_http_error``, ``url_too_large``, ``url_timeout``, ``url_not_allowed``,
or an upload's code such as ``unsupported_media_type``) and a message naming
the URL's host. ``fetch`` itself knows nothing of jobs: ``flask separate
--url`` uses it too.
"""

from __future__ import annotations

import contextlib
import http.client
import uuid
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

from flask import current_app
from sqlalchemy import update

from app import storage
from app.errors import ServiceError
from app.extensions import db
from app.models.engines import Progress
from app.records import Job, User
from app.services import jobs, outbound, quotas

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
# A read that waits longer than this fails the fetch (the whole fetch has
# URL_FETCH_TIMEOUT_SECONDS at most anyway).
READ_TIMEOUT = 30.0
CHUNK = 256 * 1024
USER_AGENT = "AiMusicSeparator-Fetch/1"
# The share of the job's progress bar the download takes; the job's own work
# fills the rest.
PROGRESS_SHARE = 0.1
MB = 1024 * 1024
# A job's audio comes from exactly one of an upload and a URL.
BOTH_GIVEN = "Send the audio as file or its address as url, not both."
NONE_GIVEN = "Send the audio as file, or its address as url."


class FetchError(ServiceError):
    """The URL could not be fetched; the code says why."""

    code = "url_unreachable"
    status = 422


@dataclass(frozen=True)
class Fetched:
    path: Path
    filename: str
    size: int
    url: str  # where the file came from, after redirects


def _allowed_hosts(config: Any) -> frozenset[str]:
    return outbound.allow_list(config.get("URL_FETCH_ALLOW_HOSTS"))


def check(url: str, config: Any = None) -> outbound.Target:
    """The URL's form and addresses, as submit and every hop of a fetch check
    them: 422 ``invalid_url`` or ``url_not_allowed`` with ``errors.url``."""
    config = config if config is not None else current_app.config
    return outbound.check(
        url,
        field="url",
        allow_hosts=_allowed_hosts(config),
        hint="URL_FETCH_ALLOW_HOSTS lists trusted hosts exempt from this rule",
    )


def filename_from_url(url: str) -> str:
    """The display name the URL's path gives (its last segment), sanitised as
    an upload's name is."""
    return jobs.display_name(unquote(urlsplit(url).path))


def pending_input(url: str) -> dict[str, Any]:
    """A job's ``input`` before its fetch: the URL and the name it suggests."""
    return {"url": url, "filename": filename_from_url(url)}


def pending_url(job: Job) -> str | None:
    """The URL a job's run must fetch first, or None (an upload, or fetched
    already: a later attempt does not fetch again)."""
    info = job.input or {}
    return info.get("url") if "size" not in info else None


def fetch(url: str, folder: Path, report: Progress, config: Any = None) -> Fetched:
    """Download ``url`` into a new file in ``folder`` through the SSRF guard.

    Redirects are followed by hand, each hop checked again. ``report`` gets
    the download's progress (0..1 when the size is known) with stage
    ``downloading``; a report that raises (a canceled job) stops the fetch.
    Anything wrong raises a ServiceError and leaves no file behind.
    """
    config = config if config is not None else current_app.config
    limit = int(config["MAX_UPLOAD_MB"]) * MB
    seconds = float(config["URL_FETCH_TIMEOUT_SECONDS"])
    host = urlsplit(url).hostname or "?"
    report.stage("downloading", 0.0)
    with outbound.Watchdog(seconds) as watchdog:
        try:
            for _hop in range(MAX_REDIRECTS + 1):
                target = _check_hop(url, config)
                host = target.host
                conn, response = _request(target, watchdog)
                try:
                    location = response.getheader("Location")
                    if response.status in REDIRECTS and location:
                        url = urljoin(url, location)
                        continue
                    _check_answer(response, host, limit)
                    name = _filename(response, url)
                    path, size = _save(response, folder, limit, host, report, watchdog)
                    return Fetched(path, name, size, url)
                finally:
                    response.close()
                    conn.close()
                    watchdog.release()
        except _Broken as broken:
            if watchdog.passed:
                raise FetchError(
                    f"Fetching the file from {host} took longer than {seconds:g} s "
                    "(URL_FETCH_TIMEOUT_SECONDS).",
                    code="url_timeout",
                ) from None
            if broken.reading and isinstance(broken.__cause__, TimeoutError):
                raise FetchError(
                    f"{host} stopped sending for {READ_TIMEOUT:g} s.", code="url_timeout"
                ) from None
            reason = broken.reason()
            raise FetchError(f"Could not fetch the file from {host}: {reason}.") from None
    raise FetchError(f"Could not fetch the file from {host}: more than {MAX_REDIRECTS} redirects.")


class _Broken(Exception):
    """The network failed under the fetch (as opposed to the disk): while
    connecting and asking, or while ``reading`` the answer."""

    def __init__(self, *, reading: bool = False) -> None:
        super().__init__()
        self.reading = reading

    def reason(self) -> str:
        cause = self.__cause__
        if isinstance(cause, ConnectionRefusedError):
            return "the connection was refused"
        if isinstance(cause, TimeoutError):
            return "it did not answer in time"
        if isinstance(cause, http.client.IncompleteRead):
            return "the connection closed before the whole file arrived"
        detail = str(cause) if cause is not None else ""
        return f"{type(cause).__name__}{': ' + detail if detail else ''}"[:300]


def _check_hop(url: str, config: Any) -> outbound.Target:
    try:
        return check(url, config)
    except outbound.UrlRefused as exc:
        # A redirect's target is refused as the URL itself would be at submit.
        raise FetchError(exc.message, code=exc.code) from None


def _request(
    target: outbound.Target, watchdog: outbound.Watchdog
) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    """A GET to the first of the target's checked addresses that answers."""
    last: Exception | None = None
    for address in target.addresses:
        if watchdog.passed:
            break
        conn = outbound.connection(
            target, address, min(READ_TIMEOUT, max(watchdog.remaining(), 0.1)), watchdog
        )
        try:
            conn.request(
                "GET",
                target.path,
                headers={"User-Agent": USER_AGENT, "Accept": "audio/*, video/*, */*;q=0.5"},
            )
            return conn, conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            watchdog.release()
            last = exc
    raise _Broken() from last


def _check_answer(response: http.client.HTTPResponse, host: str, limit: int) -> None:
    if not 200 <= response.status < 300:
        raise FetchError(
            f"{host} answered HTTP {response.status} {response.reason}".rstrip() + ".",
            code="url_http_error",
        )
    length = response.getheader("Content-Length")
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise FetchError(
            f"The file at {host} is {int(length) / MB:.1f} MB, over the limit of "
            f"{limit // MB} MB (MAX_UPLOAD_MB).",
            code="url_too_large",
        )


def _filename(response: http.client.HTTPResponse, url: str) -> str:
    """The name ``Content-Disposition`` gives, else the URL's last path segment."""
    disposition = response.getheader("Content-Disposition")
    if disposition:
        message = Message()
        message["Content-Disposition"] = disposition
        with contextlib.suppress(Exception):
            name = message.get_filename()
            if name:
                return jobs.display_name(name)
    return filename_from_url(url)


def _save(
    response: http.client.HTTPResponse,
    folder: Path,
    limit: int,
    host: str,
    report: Progress,
    watchdog: outbound.Watchdog,
) -> tuple[Path, int]:
    length = response.getheader("Content-Length")
    total = int(length) if length and length.strip().isdigit() else 0
    path = folder / f"fetch-{uuid.uuid4().hex}"
    size = 0
    try:
        with open(path, "wb") as out:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Broken(reading=True) from exc
                if watchdog.passed:
                    # The watchdog's cut reads as an early end, not an error.
                    raise _Broken(reading=True) from TimeoutError()
                if not chunk:
                    if total and size < total:  # http.client does not say so itself
                        incomplete = http.client.IncompleteRead(b"", total - size)
                        raise _Broken(reading=True) from incomplete
                    break
                size += len(chunk)
                if size > limit:
                    raise FetchError(
                        f"The file at {host} is larger than the limit of {limit // MB} MB "
                        "(MAX_UPLOAD_MB).",
                        code="url_too_large",
                    )
                out.write(chunk)
                report(size / total if total else 0.0)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, size


def fetch_input(job: Job, report: Progress) -> bool:
    """The first step of a URL job's run: fetch its input, check it as an
    upload is checked, count it against the owner's storage quota and adopt
    it as the job's input file. Raises a ServiceError (the job then fails with
    its code) and leaves no file behind when it does; returns False, keeping
    nothing, when the job stopped running meanwhile (canceled, deleted)."""
    url = pending_url(job)
    assert url is not None
    fetched = fetch(url, storage.tmp_dir(), report)
    try:
        try:
            meta = jobs.check_audio(fetched.path, fetched.size, fetched.filename)
        except ServiceError as exc:
            host = urlsplit(fetched.url).hostname
            raise ServiceError(
                f"{exc.message.rstrip('.')} (fetched from {host}).",
                code=exc.code,
                status=exc.status,
            ) from None
        meta["url"] = url
        owner = db.session.get(User, job.owner_id)
        assert owner is not None
        quotas.reserve(owner, incoming=fetched.size)
        moved = db.session.execute(  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
            update(Job)
            .where(Job.id == job.id, Job.status == "running", Job.attempts == job.attempts)
            .values(input=meta, stored_bytes=Job.stored_bytes + fetched.size)
        ).rowcount
        if moved != 1:
            db.session.rollback()
            fetched.path.unlink(missing_ok=True)
            return False
        storage.adopt_input(job.id, fetched.path, meta["format"] or "bin")
        db.session.commit()
    except BaseException:
        db.session.rollback()
        fetched.path.unlink(missing_ok=True)
        raise
    # The runner's copy of the row is detached (runner._snapshot): it gets
    # what was just written, without reading the database again.
    job.input = meta
    job.stored_bytes = (job.stored_bytes or 0) + fetched.size
    return True
