"""Run one function in a throwaway child process with memory, CPU and time limits.

The upload probe parses files from anyone with FFmpeg's demuxers. In the API
process, a parser crash would take down every request that process serves,
and a file built to make FFmpeg buffer (one Ogg packet over 200 MB of pages, a
moov of millions of boxes) would cost memory in proportion to the upload for
each concurrent upload. In a child, a crash or a blow-up costs the child only
and the client gets a clear answer.

Children come from a fork server: a Python process started once per API
process (``server_command``) that imports ``app.audio`` (not the API) and then
forks a fresh single-threaded child per call. Forking the API process itself
is not safe (gunicorn's threads may hold locks at fork time) and a new
interpreter per call costs ~1 s of imports; a fork server child probes an
upload in about 8 ms. multiprocessing's own fork server is not used: in
Python 3.11 each of its children re-runs the main script (``gunicorn``'s, say)
before doing anything.

Each call gets its own socket pair; the server receives one end (SCM_RIGHTS)
and forks a child that reads ``(func, args, limits)`` from it, sends its pid,
runs ``func`` and sends the answer.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

log = logging.getLogger(__name__)

# Imported by the fork server, so children start with them loaded (PyAV loads
# av.subtitles at its first open: a few ms in every child otherwise).
PRELOAD = ("app.audio", "av.subtitles.stream")
# The folder holding this ``app`` package: first on the server's path, so the
# server imports this very package whatever its current directory holds.
_PROJECT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Unavailable(RuntimeError):
    """No child could be had (the fork server does not start or answer): a
    fault of this host, not of the call."""


class ChildFailed(Exception):
    """The child ended without an answer: it crashed or was killed."""


class ChildOutOfMemory(ChildFailed):
    """The call needed more memory than ``memory_bytes``."""


class ChildTimedOut(ChildFailed):
    """No answer within ``timeout`` seconds; the child was killed."""


# --------------------------------------------------------------------------- parent side


class _Server:
    """This process's fork server (one per process: a forked process starts its own)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid: int | None = None  # the process that started the server
        self.process: subprocess.Popen[bytes] | None = None
        self.control: socket.socket | None = None

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = server_command(theirs.fileno())
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([_PROJECT_DIR, *(p for p in sys.path if p)]),
            # The children need no BLAS: no idle thread pool in each of them.
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
        }
        with theirs:
            self.process = subprocess.Popen(
                command,
                pass_fds=(theirs.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C to the API is not its business
            )
        self.control = ours
        self.pid = os.getpid()

    def _stop(self) -> None:
        if self.control is not None:
            self.control.close()
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        self.control = self.process = None

    def _forget_inherited(self) -> None:
        """In a process forked from the one that started the server (gunicorn
        with preload_app): that server is the parent's; close our copy of its
        control socket, so it still ends with the parent, and start our own."""
        if self.pid is not None and self.pid != os.getpid():
            if self.control is not None:
                self.control.close()
            self.control = self.process = None
            self.pid = None

    def hand_over(self, end: socket.socket) -> None:
        """Give the server one end of a call's socket pair (starting it if needed)."""
        with self.lock:
            self._forget_inherited()
            for attempt in (1, 2):
                if (
                    self.pid != os.getpid()
                    or self.process is None
                    or self.process.poll() is not None
                ):
                    if self.process is not None and self.pid == os.getpid():
                        log.warning("the fork server for isolated calls had ended: restarting it")
                        self._stop()
                    self._start()
                assert self.control is not None
                try:
                    socket.send_fds(self.control, [b"c"], [end.fileno()])
                    return
                except OSError:
                    if attempt == 2:
                        raise
                    self._stop()

    def warm_up(self) -> None:
        with self.lock:
            self._forget_inherited()
            if self.process is None:
                self._start()


_server = _Server()
# A lock held by another thread at fork time would stay held in the child.
os.register_at_fork(after_in_child=lambda: setattr(_server, "lock", threading.Lock()))


# The server's entry. Importing the ``app`` package is light (the Flask
# factory loads on first use, app/__init__.py), so the server carries the
# audio stack and not the API.
_SERVE = "import sys; from app.isolated import serve; serve(int(sys.argv[1]))"


def server_command(control_fd: int) -> list[str]:
    """How the fork server is started, told the number of its control socket.

    ``-P``: no current directory on the path (``_start`` puts the project's there).
    """
    return [sys.executable, "-P", "-c", _SERVE, str(control_fd)]


def warm_up() -> None:
    """Start the fork server now rather than at the first call (~1 s of imports):
    gunicorn's ``post_worker_init`` calls this, so no upload waits for it."""
    _server.warm_up()


def call(
    func: Callable[..., Any],
    *args: Any,
    timeout: float,
    memory_bytes: int | None = None,
    cpu_seconds: int | None = None,
) -> Any:
    """``func(*args)`` in a child process; its return value, or its exception.

    ``func`` and its arguments must pickle (a module-level function). Raises
    ``ChildOutOfMemory`` past ``memory_bytes`` of new address space,
    ``ChildTimedOut`` past ``timeout`` seconds (the child is killed), and
    ``ChildFailed`` when the child ends without answering: a crash, or
    ``cpu_seconds`` of CPU spent. ``Unavailable`` when no child starts.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with theirs:
            _server.hand_over(theirs)
    except OSError as exc:
        ours.close()
        raise Unavailable(f"the fork server cannot be reached ({exc})") from exc
    connection = Connection(ours.detach())
    pid: int | None = None
    try:
        connection.send((func, args, memory_bytes, cpu_seconds))
        if not connection.poll(timeout):
            raise Unavailable(f"the fork server started no child within {timeout:g} s")
        pid = connection.recv()
        if not connection.poll(timeout):
            raise ChildTimedOut(f"no answer within {timeout:g} s")
        kind, value = connection.recv()
    except ChildTimedOut:
        if pid is not None:
            _kill(pid)
        raise
    except (EOFError, OSError):
        if pid is None:  # no child ever started on the call
            raise Unavailable("the fork server gave no child for the call") from None
        raise ChildFailed("the child ended without answering (it crashed or was killed)") from None
    finally:
        connection.close()
    if kind == "ok":
        return value
    if kind == "memory":
        raise ChildOutOfMemory(f"over {memory_bytes} bytes of memory")
    raise value


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- server side


def _address_space() -> int | None:
    """This process's virtual memory size, in bytes (what RLIMIT_AS counts),
    or None where /proc is not there to say."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _child(fd: int) -> None:
    connection = Connection(fd)
    func, args, memory_bytes, cpu_seconds = connection.recv()
    connection.send(os.getpid())
    # A crashing parser leaves no core file (of someone's upload) behind.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    mapped = _address_space()
    if memory_bytes is not None and mapped is not None:
        # On top of what the child already maps (the interpreter and its
        # libraries), so the limit is the call's own.
        limit = mapped + memory_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if cpu_seconds is not None:
        # Killed at the limit: loops inside C code that never come back to Python.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds))
    try:
        answer: tuple[str, Any] = ("ok", func(*args))
    except MemoryError:
        answer = ("memory", None)
    except BaseException as exc:  # the parent raises it again
        answer = ("raised", exc)
    try:
        connection.send(answer)
    except Exception as exc:  # a value or an exception that does not pickle
        connection.send(("raised", RuntimeError(f"{type(exc).__name__}: {exc}")))


def serve(control_fd: int) -> None:
    """The fork server's loop: one forked child per socket received, until the
    parent closes the control socket."""
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in PRELOAD:
        __import__(name)
    gc.freeze()  # children do not copy pages just to walk the preloaded objects
    control = socket.socket(fileno=control_fd)
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(control, 1, 1)
        except InterruptedError:
            continue
        if not message:
            return  # the parent is gone
        for fd in fds:
            if os.fork() == 0:
                code = 0
                try:
                    control.close()
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    _child(fd)
                except BaseException:
                    code = 1
                finally:
                    os._exit(code)
            os.close(fd)
