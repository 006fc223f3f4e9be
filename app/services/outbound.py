"""Requests to URLs that users choose, guarded against server-side request forgery.

Webhooks (``services/webhooks.py``) and input by URL (``services/url_input.py``)
both make requests to addresses a user names, which invites SSRF: a URL that
points at the cloud metadata service, a database on the LAN, the API itself.
The one guard both use:

- ``check`` accepts only http/https URLs of at most ``MAX_URL_LENGTH``
  characters, with no credentials, and resolves the host: every address it
  resolves to must be public (``is_public``), unless the caller lifts the
  address rule for it (``allow_private``);
- the connection then goes to an address that was just checked
  (``PinnedHTTPConnection``, ``PinnedHTTPSConnection``): the Host header and
  TLS (SNI, the certificate check) use the URL's host name, so a DNS answer
  that changes between the check and the connection ("DNS rebinding") cannot
  point it inward;
- a ``Watchdog`` cuts the connection when a wall-clock deadline passes:
  socket timeouts bound each read, not the whole exchange, and a server
  sending a byte now and then would otherwise hold the caller for as long as
  it liked.

Redirects are the caller's business: webhooks do not follow them, the URL
fetch checks every hop again.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.errors import ServiceError

MAX_URL_LENGTH = 2048
CONNECT_TIMEOUT = 5.0

IP = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(ServiceError):
    """A URL the guard refuses, as a 422 naming the request field it came in:
    ``invalid_<field>`` (its form, or a host that does not resolve) or
    ``<field>_not_allowed`` (an address that is not public)."""

    status = 422

    def __init__(self, message: str, *, field: str, not_allowed: bool = False) -> None:
        code = f"{field}_not_allowed" if not_allowed else f"invalid_{field}"
        super().__init__(message, code=code, errors={field: [message]})
        self.field = field
        self.not_allowed = not_allowed


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect, and what to say in Host/SNI."""

    scheme: str
    host: str
    port: int
    path: str
    addresses: tuple[str, ...]

    @property
    def authority(self) -> str:
        """``host:port`` as the allow-lists spell it (IPv6 in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def is_public(ip: IP) -> bool:
    """Whether an address is on the public internet: not private, loopback,
    link-local, multicast, reserved, unspecified, shared (CGNAT) or
    documentation space, including IPv4 addresses wrapped in IPv6."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return is_public(ip.ipv4_mapped)
        embedded = [ip.sixtofour, *list(ip.teredo or ())]
        if any(v4 is not None and not is_public(v4) for v4 in embedded):
            return False
    return ip.is_global and not (
        ip.is_multicast
        or ip.is_private
        or ip.is_reserved
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
    )


def parse(url: str, *, field: str) -> tuple[str, str, int, str]:
    """Check the URL's form; returns (scheme, host, port, path with query)."""
    if not isinstance(url, str) or not url.strip():
        raise UrlRefused(f"{field} must be an http or https URL.", field=field)
    if len(url) > MAX_URL_LENGTH:
        raise UrlRefused(f"{field} is longer than {MAX_URL_LENGTH} characters.", field=field)
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        raise UrlRefused(f"{field} must not contain spaces or control characters.", field=field)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRefused(f"{field} is not a valid URL.", field=field) from None
    if parts.scheme not in ("http", "https"):
        raise UrlRefused(f"{field} must use http or https.", field=field)
    if parts.username is not None or parts.password is not None:
        raise UrlRefused(
            f"{field} must not carry credentials; put a token in the path or query.", field=field
        )
    host = parts.hostname
    if not host:
        raise UrlRefused(f"{field} has no host.", field=field)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80), path


def resolve(
    host: str, port: int, *, allow_private: bool, field: str, hint: str = ""
) -> tuple[str, ...]:
    """Every address ``host`` resolves to; refuses the lot if any is not public
    (a name with one public and one internal record is not safe either).
    ``hint`` ends the refusal's message: how an operator lifts the rule."""
    try:
        literal: IP | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        found = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise UrlRefused(f"{field}'s host '{host}' does not resolve.", field=field) from None
        found = []
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if address not in found:
                found.append(address)
        if not found:
            raise UrlRefused(f"{field}'s host '{host}' does not resolve.", field=field)
    if not allow_private:
        for address in found:
            if not is_public(address):
                raise UrlRefused(
                    f"{field} resolves to {address}, which is not a public address; "
                    "private, loopback, link-local and reserved addresses are refused"
                    + (f" ({hint})." if hint else "."),
                    field=field,
                    not_allowed=True,
                )
    return tuple(str(a) for a in found)


def check(
    url: str,
    *,
    field: str,
    allow_private: bool | None = None,
    allow_hosts: frozenset[str] = frozenset(),
    hint: str = "",
) -> Target:
    """Validate a URL: its form, then every address its host resolves to.

    The address rule is lifted when ``allow_private`` is true, or when the
    URL's ``host`` or ``host:port`` (lowercase, IPv6 in brackets) is in
    ``allow_hosts``: an operator's trusted server on the LAN.
    """
    scheme, host, port, path = parse(url, field=field)
    bracketed = f"[{host}]" if ":" in host else host
    trusted = bool(allow_private) or bool(
        allow_hosts & {bracketed.lower(), f"{bracketed.lower()}:{port}"}
    )
    addresses = resolve(host, port, allow_private=trusted, field=field, hint=hint)
    return Target(scheme, host, port, path, addresses)


def allow_list(value: str | Iterable[str] | None) -> frozenset[str]:
    """A setting of ``host`` or ``host:port`` entries (a list, or one string
    separated by commas), as ``check`` compares them."""
    items = (value or "").split(",") if isinstance(value, str) or value is None else value
    return frozenset(part.strip().lower() for part in items if part.strip())


class Watchdog:
    """Cuts a request's connection when its deadline passes.

    Shutting a socket down from another thread wakes whatever call is blocked
    on it (a send, a read, the TLS handshake); connecting is bounded by its own
    timeout instead. The shutdown goes to a duplicate of the descriptor taken
    right after connecting: it reaches the connection below TLS (an
    SSLSocket's own ``shutdown`` would pull the TLS state from under a read in
    progress), keeps working after http.client has closed its copy, and can
    never hit a descriptor number the process has reused meanwhile.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds
        self.expired = False
        self._lock = threading.Lock()
        self._watched: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        self.release()

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    @property
    def passed(self) -> bool:
        return self.expired or self.remaining() <= 0

    def connect(self, address: str, port: int) -> socket.socket:
        """A connection to the address that the watchdog can cut."""
        remaining = self.remaining()
        if remaining <= 0:
            raise TimeoutError("the deadline passed before connecting")
        sock = socket.create_connection((address, port), min(CONNECT_TIMEOUT, remaining))
        with self._lock:
            if self.expired:
                sock.close()
                raise TimeoutError("the deadline passed while connecting")
            self._watched.append(sock.dup())
        return sock

    def release(self) -> None:
        """Forget the connections of requests that are over (their duplicates
        would otherwise keep them open)."""
        with self._lock:
            for sock in self._watched:
                sock.close()
            self._watched.clear()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._watched:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


class PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a vetted address, with the URL's host in the Host header."""

    def __init__(
        self, host: str, port: int, address: str, timeout: float, watchdog: Watchdog
    ) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address
        self.watchdog = watchdog

    def connect(self) -> None:
        self.sock = self.watchdog.connect(self.address, self.port)
        self.sock.settimeout(self.timeout)


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a vetted address; SNI and certificate checks use the URL's host."""

    def __init__(
        self,
        host: str,
        port: int,
        address: str,
        timeout: float,
        context: ssl.SSLContext,
        watchdog: Watchdog,
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self.address = address
        self.tls = context
        self.watchdog = watchdog

    def connect(self) -> None:
        sock = self.watchdog.connect(self.address, self.port)
        sock.settimeout(self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


def tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def connection(
    target: Target,
    address: str,
    timeout: float,
    watchdog: Watchdog,
    context: ssl.SSLContext | None = None,
) -> http.client.HTTPConnection:
    """A connection to one of ``target``'s checked addresses (not yet opened)."""
    if target.scheme == "https":
        return PinnedHTTPSConnection(
            target.host, target.port, address, timeout, context or tls_context(), watchdog
        )
    return PinnedHTTPConnection(target.host, target.port, address, timeout, watchdog)
