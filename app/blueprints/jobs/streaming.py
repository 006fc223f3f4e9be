"""What the jobs routes stream: whether a waiting client is still there, the
zip archive written as it is read, and download names in headers."""

from __future__ import annotations

import json
import select
import socket
import unicodedata
import zipfile
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

from flask import Response, current_app, request, stream_with_context

from app.extensions import db


def client_gone_check() -> Callable[[], bool]:
    """A check, cheap enough to call every second, of whether this request's
    client has closed its connection: a waiting request or an event stream
    then gives its server thread back at once instead of at its next write.
    Needs the socket gunicorn puts in the WSGI environ; elsewhere (tests'
    clients, other servers) it always says no."""
    sock = request.environ.get("gunicorn.socket")
    if sock is None or not hasattr(select, "poll"):
        return lambda: False
    try:
        fd = sock.fileno()
    except OSError:
        return lambda: True
    hangup = select.POLLHUP | select.POLLERR | select.POLLNVAL | getattr(select, "POLLRDHUP", 0)

    def gone() -> bool:
        poller = select.poll()
        poller.register(fd, select.POLLIN | hangup)
        for _, mask in poller.poll(0):
            if mask & hangup:
                return True
            if mask & select.POLLIN and not hasattr(select, "POLLRDHUP"):
                try:  # without POLLRDHUP: readable with nothing to read is EOF
                    return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
                except (BlockingIOError, InterruptedError):
                    return False
                except OSError:
                    return True
        return False

    return gone


class ZipSink:
    """A write-only file object whose bytes are handed to the response as they come."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.offset = 0

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        self.offset += len(data)
        return len(data)

    def tell(self) -> int:
        return self.offset

    def flush(self) -> None:
        pass

    def drain(self) -> Iterator[bytes]:
        chunks, self.chunks = self.chunks, []
        yield from chunks


def attachment_header(name: str) -> str:
    """``Content-Disposition`` for any file name: an ASCII fallback plus the
    RFC 6266 ``filename*`` form, as ``send_file`` does, so names like ``曲.mp3``
    survive and never break the header."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    ascii_name = "".join(c for c in ascii_name if c.isprintable() and c not in '"\\') or "download"
    if ascii_name == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


def watch_options() -> dict[str, Any]:
    """What ``events.watch`` and ``batches.watch`` take from the request and
    the settings: where to resume, how often to look, how to hear changes."""
    config = current_app.config
    return {
        "last_event_id": request.headers.get("Last-Event-ID") or None,
        "poll_seconds": float(config["SSE_POLL_SECONDS"]),
        "heartbeat_seconds": float(config["SSE_HEARTBEAT_SECONDS"]),
        "redis_url": config.get("REDIS_URL"),
        "notify_dir": config.get("NOTIFY_DIR"),
        "client_gone": client_gone_check(),
    }


def event_stream(
    place: Any, changes: Iterator[Any], render: Callable[[Any], dict[str, Any]]
) -> Response:
    """A Server-Sent Events answer: each change (None: a keep-alive) as one
    event of ``render(change)``'s JSON. ``place`` is the waiting place the
    stream holds (``jobs.hold_waiting_place``), released when it ends.
    The caller has closed its database session: the stream may stay open for
    minutes, and holds none while it waits."""

    def generate() -> Iterator[str]:
        try:
            yield "retry: 3000\n\n"
            for change in changes:
                if change is None:
                    yield ": keepalive\n\n"
                    continue
                data = json.dumps(render(change), separators=(",", ":"), sort_keys=True)
                db.session.close()  # rendering may read the database (queue_position)
                yield f"event: {change.event}\nid: {change.id}\ndata: {data}\n\n"
        finally:
            place.release()

    response = Response(stream_with_context(generate()), mimetype="text/event-stream")
    # Also when the body was never iterated (the generator's own finally then never runs).
    response.call_on_close(place.release)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event through at once
    return response


def zip_response(entries: list[tuple[str, Any]], download_name: str) -> Response:
    """A zip of ``entries`` ((name in the archive, file path) pairs) streamed
    as it is written: stored, not compressed (audio does not shrink), never
    built in memory, Zip64 so no file size limits it."""

    def generate() -> Iterator[bytes]:
        sink = ZipSink()
        with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_STORED) as archive:  # type: ignore[call-overload]  # ZipSink has the write/tell/flush a written archive uses, not close
            for arcname, path in entries:
                with (
                    archive.open(arcname, mode="w", force_zip64=True) as entry,
                    open(path, "rb") as fh,
                ):
                    while chunk := fh.read(1024 * 1024):
                        entry.write(chunk)
                        yield from sink.drain()
                yield from sink.drain()
        yield from sink.drain()

    response = Response(stream_with_context(generate()), mimetype="application/zip")
    response.headers["Content-Disposition"] = attachment_header(download_name)
    return response
