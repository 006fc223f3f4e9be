"""A webhook receiver that never finishes answering: it takes the request, then
sends one byte a second for as long as the client stays. Per-read timeouts
never fire on it, which is the point.

Each connection is recorded with when it opened and when the client went away,
so a test can tell when a delivery was cut. Leaving the ``with`` block closes
every connection, which also frees a client that has no deadline of its own.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

# An HTTP answer whose header section never ends.
ANSWER = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100_000
# A TLS handshake record announcing 16 KB that come one byte at a time.
HANDSHAKE = b"\x16\x03\x03\x40\x00" + b"\x00" * 16_384


@dataclass
class Connection:
    opened: float
    request: bytes = b""
    closed: float | None = None  # when the client went away (time.monotonic)


class Trickler:
    """On a free loopback port. ``tls`` serves HTTPS with that context;
    ``stall_handshake`` trickles the TLS handshake itself instead; ``answer``
    replaces the HTTP answer (the first ``at_once`` bytes go out together)."""

    def __init__(
        self,
        *,
        interval: float = 1.0,
        tls: ssl.SSLContext | None = None,
        stall_handshake: bool = False,
        answer: bytes = ANSWER,
        at_once: int = 0,
    ) -> None:
        self.interval = interval
        self.answer = answer
        self.at_once = at_once
        self.tls = tls
        self.stall_handshake = stall_handshake
        self.connections: list[Connection] = []
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = int(self.server.getsockname()[1])
        self._threads = [threading.Thread(target=self._accept, daemon=True)]

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}/hook"

    def __enter__(self) -> Trickler:
        self._threads[0].start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):  # below TLS, as the client's watchdog
                    socket.socket.shutdown(sock, socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(10)
        self.server.close()

    def wait_for_connection(self, timeout: float) -> Connection:
        ends = time.monotonic() + timeout
        while time.monotonic() < ends:
            if self.connections:
                return self.connections[0]
            time.sleep(0.05)
        raise AssertionError(f"no delivery reached the receiver within {timeout:g} s")

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            record = Connection(opened=time.monotonic())
            self.connections.append(record)
            with self._lock:
                self._sockets.append(sock)
            thread = threading.Thread(target=self._serve, args=(sock, record), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, raw: socket.socket, record: Connection) -> None:
        sock: Any = raw
        try:
            raw.settimeout(10)
            if self.stall_handshake:
                record.request = raw.recv(65536)  # the ClientHello
                payload, start = HANDSHAKE, 0
            else:
                if self.tls is not None:
                    sock = self.tls.wrap_socket(raw, server_side=True)
                    with self._lock:
                        self._sockets.append(sock)
                record.request = _read_request(sock)
                payload, start = self.answer, self.at_once
                sock.sendall(payload[:start])
            for i in range(start, len(payload)):
                sock.sendall(payload[i : i + 1])
                # The client sends nothing more: readable means it has gone.
                if select.select([sock], [], [], self.interval)[0] or self._stop.is_set():
                    break
        except OSError:
            pass
        finally:
            record.closed = time.monotonic()
            with contextlib.suppress(OSError):
                sock.close()


def _read_request(sock: Any) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body
