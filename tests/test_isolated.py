"""Upload probing in a child process (app/isolated.py): a crash, a memory
blow-up or a hang costs the child, and the client gets a clear answer.

What the children run is in tests/support/isolated_children.py: functions pickle by
name, and the fork server's children import their module (a light one).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from app import audio, isolated
from tests.support.apps import make_app, register_and_login
from tests.support.isolated_children import (
    add,
    allocate,
    crash,
    imported,
    my_pid,
    raise_value_error,
    sleep_forever,
    spin,
)
from tests.support.ogg import ogg_one_long_packet
from tests.support.uploads import assert_nothing_kept, assert_refused, upload

SPEECH = Path(__file__).parent / "data" / "speech"
MB = 1 << 20


def gone(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


# --------------------------------------------------------------------------- isolated.call


def test_a_value_and_an_exception_come_back_from_the_child() -> None:
    assert isolated.call(add, 2, 3, timeout=30) == 5
    assert isolated.call(my_pid, timeout=30) != os.getpid()
    with pytest.raises(ValueError, match="not a number: 'x'"):
        isolated.call(raise_value_error, timeout=30)


def test_children_carry_the_audio_stack_only() -> None:
    """The server imports app.audio without the API (Flask, SQLAlchemy): half
    the memory per API process, and less to fork per upload."""
    assert isolated.call(imported, "app.audio", timeout=30)
    assert isolated.call(imported, "av", timeout=30)
    assert not isolated.call(imported, "flask", timeout=30)
    assert not isolated.call(imported, "sqlalchemy", timeout=30)


def test_the_audio_package_imports_without_the_api() -> None:
    """What lets the fork server start with plain imports: in a fresh
    interpreter, ``app.audio`` brings in none of the API's heavy packages, and
    ``from app import create_app`` still finds the factory."""
    heavy = ("flask", "sqlalchemy", "celery", "torch")
    code = (
        "import sys\n"
        "import app.audio\n"
        f"loaded = [m for m in {heavy!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "from app import create_app\n"
        "assert create_app.__module__ == 'app.factory' and 'flask' in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_crash_costs_the_child_only() -> None:
    with pytest.raises(isolated.ChildFailed, match="without answering"):
        isolated.call(crash, timeout=30)
    assert isolated.call(add, 1, 1, timeout=30) == 2  # the server lives on


def test_memory_past_the_limit_is_refused_in_the_child() -> None:
    with pytest.raises(isolated.ChildOutOfMemory):
        isolated.call(allocate, 512, timeout=30, memory_bytes=64 * MB)
    assert isolated.call(allocate, 16, timeout=30, memory_bytes=64 * MB) == 16 * MB


def test_a_child_past_its_timeout_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with pytest.raises(isolated.ChildTimedOut):
        isolated.call(sleep_forever, str(pid_file), timeout=1.0)
    assert gone(int(pid_file.read_text()))


def test_a_child_past_its_cpu_limit_is_stopped() -> None:
    started = time.monotonic()
    with pytest.raises(isolated.ChildFailed):
        isolated.call(spin, timeout=60, cpu_seconds=1)
    assert time.monotonic() - started < 30  # stopped by the CPU limit, not the timeout


def test_a_dead_fork_server_is_started_again() -> None:
    isolated.warm_up()
    server = isolated._server.process
    assert server is not None
    server.kill()
    server.wait()
    assert isolated.call(add, 20, 22, timeout=30) == 42
    assert isolated._server.process is not server


def test_calls_from_many_threads_at_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: isolated.call(add, n, n, timeout=30), range(32)))
    assert answers == [2 * n for n in range(32)]


# --------------------------------------------------------------------------- probe_isolated


def transcribe(client: FlaskClient, headers: dict[str, str], data: bytes, name: str) -> Any:
    return upload(client, headers, data, name, "audio/*", endpoint="/api/v1/transcriptions")


def test_the_probe_gives_the_same_answers_in_a_child() -> None:
    for path in sorted(SPEECH.glob("clip*")):
        assert audio.probe_isolated(path, memory_mb=256) == audio.probe(path), path.name


def test_an_upload_that_makes_ffmpeg_buffer_is_refused_at_the_memory_limit(
    tmp_path: Path,
) -> None:
    """One Ogg packet over 24 MB of pages: FFmpeg buffers the whole packet.
    In the API process that is 24 MB per concurrent upload (up to
    MAX_UPLOAD_MB); in the child it stops at PROBE_MEMORY_MB."""
    app = make_app(tmp_path / "data", PROBE_MEMORY_MB=16)
    client = app.test_client()
    headers = register_and_login(client)
    response = transcribe(client, headers, ogg_one_long_packet(24), "endless.opus")
    assert_refused(response, 422, "audio_decode_failed")
    assert "more than 16 MB of memory" in response.json["message"]
    assert response.json["errors"] == {"max_probe_memory_mb": 16}
    assert_nothing_kept(app)
    # The next upload is probed as usual.
    response = transcribe(client, headers, (SPEECH / "clip2.flac").read_bytes(), "clip2.flac")
    assert response.status_code == 202, response.json
    assert response.json["input"]["codec"] == "flac"


def test_a_probe_that_crashes_its_child_is_a_422(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the client hears when FFmpeg crashes on an upload (the crash itself
    is ``test_a_crash_costs_the_child_only``: no file that crashes this FFmpeg
    is known)."""

    real_call = isolated.call

    def crashing_call(*_args: Any, **_kwargs: Any) -> Any:
        return real_call(crash, timeout=30)

    monkeypatch.setattr(isolated, "call", crashing_call)
    app = make_app(tmp_path / "data")
    client = app.test_client()
    headers = register_and_login(client)
    response = transcribe(client, headers, (SPEECH / "clip1.mp3").read_bytes(), "clip1.mp3")
    assert_refused(response, 422, "audio_decode_failed")
    assert "the decoder stopped on it" in response.json["message"]
    assert_nothing_kept(app)


def test_probe_isolation_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_child(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("probed in a child although PROBE_ISOLATION is off")

    monkeypatch.setattr(isolated, "call", no_child)
    app = make_app(tmp_path / "data", PROBE_ISOLATION=False)
    client = app.test_client()
    headers = register_and_login(client)
    response = transcribe(client, headers, (SPEECH / "clip1.mp3").read_bytes(), "clip1.mp3")
    assert response.status_code == 202, response.json


def test_without_a_fork_server_uploads_are_probed_in_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A host where the fork server cannot run (it exits at once) still takes
    uploads, probed in the API process, and says so in the log; the file is
    not blamed."""
    monkeypatch.setattr(isolated, "_server", isolated._Server())
    monkeypatch.setattr(
        isolated, "server_command", lambda _fd: [sys.executable, "-c", "raise SystemExit(3)"]
    )
    with pytest.raises(isolated.Unavailable):
        isolated.call(add, 1, 2, timeout=30)
    clip = SPEECH / "clip1.mp3"
    with caplog.at_level(logging.ERROR, logger="app.audio"):
        assert audio.probe_isolated(clip, memory_mb=64) == audio.probe(clip)
    assert "probing in-process" in caplog.text


def test_a_forked_process_starts_its_own_fork_server() -> None:
    """gunicorn with preload_app forks workers from a process that may have a
    server already: each worker gets its own, and the parent keeps its."""
    import select

    isolated.warm_up()
    assert isolated._server.process is not None
    parents = isolated._server.process.pid
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the forked test process
        ok = False
        try:
            ok = isolated.call(add, 2, 2, timeout=30) == 4
            ok = ok and isolated._server.process is not None
            ok = ok and isolated._server.process.pid != parents
        finally:
            os.write(writer, b"1" if ok else b"0")
            os._exit(0)
    os.close(writer)
    ready, _, _ = select.select([reader], [], [], 60)
    answer = os.read(reader, 1) if ready else b"timeout"
    os.close(reader)
    os.waitpid(child, 0)
    assert answer == b"1"
    assert isolated.call(add, 1, 1, timeout=30) == 2
    assert isolated._server.process is not None and isolated._server.process.pid == parents
