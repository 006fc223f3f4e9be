"""Wake-ups between the processes of one machine, for the embedded default.

Without Redis, the worker learns about a new job by polling the SQLite broker,
and a request waiting for a job (``?wait=``, Server-Sent Events, the
OpenAI-compatible route) learns that it ended by polling the job row. Polling
fast costs idle CPU, polling slowly costs every job latency: on a 5 s clip the
two polls were a tenth of the time a user waited.

A notice here is a datagram on a UNIX socket. Every process that waits binds
one socket in a shared folder (``DATA_DIR/notify``); a writer sends the topic
(``broker``, ``job:<id>``) to every socket in that folder after its commit.
A notice only says "look again": the database stays the truth, waiters keep
a slow backstop poll, so a lost notice (a full socket buffer, a writer
without the bus) costs latency, never a job or an event.

Sockets of processes that died are removed by the next writer (the kernel
refuses datagrams to them). Processes on other machines cannot be reached this
way; deployments across machines use Redis, whose pub/sub does the same job.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import hashlib
import logging
import os
import secrets
import socket
import stat
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

# sun_path holds 108 bytes on Linux and 104 on macOS, NUL included.
MAX_SOCKET_PATH = 100
SUFFIX = ".sock"
MAX_TOPIC_BYTES = 200


def folder_for(data_dir: str | os.PathLike[str]) -> Path:
    """The notice folder every process with this ``DATA_DIR`` agrees on:
    ``DATA_DIR/notify``, or a private folder in the temporary directory when
    that path is too long for a socket address."""
    data_dir = Path(data_dir).resolve()
    folder = data_dir / "notify"
    longest_name = len(f"{2**22}-{'0' * 8}{SUFFIX}") + 1
    if len(os.fsencode(folder)) + longest_name <= MAX_SOCKET_PATH:
        return folder
    digest = hashlib.sha256(os.fsencode(data_dir)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"ams-notify-{os.getuid()}-{digest}"


class Subscription:
    """Notices of one topic since the subscription began (or since the last
    ``wait`` that saw one). Subscribe before reading the state you wait on:
    a notice sent in between is then never lost."""

    def __init__(self, bus: Bus, topic: str) -> None:
        self.bus = bus
        self.topic = topic
        self.seen = bus._interest(topic, +1)
        self.closed = False

    def wait(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for a notice; True if one came (possibly before
        this call), False on timeout."""
        return self.bus._wait(self, seconds)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.bus._interest(self.topic, -1)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class Bus:
    """The notices of one folder, as seen by this process."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._reset()

    def _reset(self) -> None:
        # Also the state of a forked child: the parent's listener thread does not
        # exist there, and its locks may have been held at the fork.
        self._cond = threading.Condition()
        self._counts: dict[str, int] = {}
        self._subscribers: dict[str, int] = {}
        self._listener: socket.socket | None = None
        self._listener_path: Path | None = None
        self._unavailable = False

    # ------------------------------------------------------------- writing

    def publish(self, topic: str) -> None:
        """Tell every listening process to look at ``topic`` again. Never raises
        and never blocks: a commit must not fail because of a notice."""
        payload = topic.encode()[:MAX_TOPIC_BYTES]
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return  # nobody ever listened here
        sender = _sender_socket()
        if sender is None:
            return
        for entry in entries:
            if not entry.name.endswith(SUFFIX):
                continue
            try:
                sender.sendto(payload, entry.path)
            except ConnectionRefusedError:
                # Nobody reads this socket any more: its process died.
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
            except OSError:
                # A full buffer (the listener is busy) or a socket just removed:
                # that waiter's backstop poll covers it.
                pass

    def notify_here(self, topic: str) -> None:
        """Wake this process's own waiters on ``topic`` (no socket, no other
        process): for events only this process sees."""
        with self._cond:
            if topic in self._subscribers:
                self._counts[topic] = self._counts.get(topic, 0) + 1
                self._cond.notify_all()

    # ------------------------------------------------------------- waiting

    def subscribe(self, topic: str) -> Subscription | None:
        """A subscription to ``topic``, or None when this process cannot listen
        (callers then poll as they would without the bus)."""
        if not self._listen():
            return None
        return Subscription(self, topic)

    @property
    def listening(self) -> bool:
        return self._listener is not None

    def _listen(self) -> bool:
        with self._cond:
            if self._listener is not None:
                return True
            if self._unavailable:
                return False
            try:
                sock, path = self._bind()
            except OSError as exc:
                self._unavailable = True
                log.warning("no local notices in %s (%s); polling instead", self.folder, exc)
                return False
            self._listener, self._listener_path = sock, path
        atexit.register(_unlink_quietly, path)
        threading.Thread(
            target=self._receive, args=(sock,), daemon=True, name="localbus-listener"
        ).start()
        return True

    def _bind(self) -> tuple[socket.socket, Path]:
        folder = self.folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(folder)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise OSError(errno.EPERM, "the notice folder is not a directory of ours")
        if info.st_mode & 0o002:
            raise OSError(errno.EPERM, "the notice folder is writable by everyone")
        path = folder / f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise OSError(errno.ENAMETOOLONG, "socket path too long")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(os.fspath(path))
        except OSError:
            sock.close()
            raise
        return sock, path

    def _receive(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(MAX_TOPIC_BYTES)
            except OSError:
                return  # closed (fork reset or shutdown)
            if sock is not self._listener:
                return  # closed by close(), which wakes this thread
            topic = data.decode(errors="replace")
            with self._cond:
                if topic in self._subscribers:
                    self._counts[topic] = self._counts.get(topic, 0) + 1
                    self._cond.notify_all()

    def _interest(self, topic: str, delta: int) -> int:
        """Count a subscriber in or out; the topic's notice count so far."""
        with self._cond:
            left = self._subscribers.get(topic, 0) + delta
            if left > 0:
                self._subscribers[topic] = left
            else:
                # Topics nobody waits on are forgotten: job ids come and go.
                self._subscribers.pop(topic, None)
                self._counts.pop(topic, None)
            return self._counts.get(topic, 0)

    def _wait(self, subscription: Subscription, seconds: float) -> bool:
        topic = subscription.topic
        with self._cond:
            came = self._cond.wait_for(
                lambda: self._counts.get(topic, 0) > subscription.seen, timeout=max(seconds, 0.0)
            )
            subscription.seen = self._counts.get(topic, 0)
            return bool(came)

    def close(self) -> None:
        """Stop listening (tests; processes simply exit)."""
        with self._cond:
            listener, path = self._listener, self._listener_path
            self._listener = self._listener_path = None
        if listener is not None and path is not None:
            sender = _sender_socket()
            with contextlib.suppress(OSError):
                if sender is not None:
                    sender.sendto(b"", os.fspath(path))  # wakes the listener thread
            _unlink_quietly(path)
            listener.close()


_sender: socket.socket | None = None


def _sender_socket() -> socket.socket | None:
    """One unbound socket sends every notice of this process (thread-safe)."""
    global _sender
    if _sender is None:
        try:
            sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sender.setblocking(False)
        except OSError:
            return None
        _sender = sender
    return _sender


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


_buses: dict[Path, Bus] = {}
_buses_lock = threading.Lock()


def get(folder: str | os.PathLike[str]) -> Bus:
    """This process's bus for ``folder`` (one listener per folder and process)."""
    key = Path(folder)
    with _buses_lock:
        bus = _buses.get(key)
        if bus is None:
            bus = _buses[key] = Bus(key)
        return bus


def close_all() -> None:
    """Stop every listener of this process (tests, which make many apps)."""
    with _buses_lock:
        buses = list(_buses.values())
        _buses.clear()
    for bus in buses:
        bus.close()


def _after_fork_in_child() -> None:
    global _buses_lock, _sender
    _buses_lock = threading.Lock()
    if _sender is not None:
        with contextlib.suppress(OSError):
            _sender.close()  # ours now: the parent keeps its own copy
        _sender = None
    for bus in _buses.values():
        inherited = bus._listener
        bus._reset()
        if inherited is not None:
            # The parent's socket: close our copy, never unlink it.
            with contextlib.suppress(OSError):
                inherited.close()


os.register_at_fork(after_in_child=_after_fork_in_child)
