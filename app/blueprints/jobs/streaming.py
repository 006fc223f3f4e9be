"""What the jobs routes stream: whether a waiting client is still there, the
zip archive written as it is read, and download names in headers."""

from __future__ import annotations

import select
import socket
import unicodedata
from collections.abc import Callable, Iterator
from urllib.parse import quote

from flask import request


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
