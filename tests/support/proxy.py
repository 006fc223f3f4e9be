"""The shipped reverse proxy (deploy/nginx/) as compose.yaml runs it, on a free
loopback port, for tests that go through it.

There is one copy of the proxy's configuration: the template the compose
``proxy`` service mounts. It is rendered here the way the official nginx image
renders it at start: the service's environment from compose.yaml, what
``limits.envsh`` exports (sourced by ``sh``, as the image's entrypoint does),
then the image's substitution of ``${PROXY_*}`` placeholders. Only the
listening address and the upstream differ, so a test can point it at a live
service. The image's own ``nginx.conf`` (the ``http`` block that includes the
rendered file) is stood in for by a few lines that keep pid, logs and
temporary files in the test's directory, so no root is needed.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.support.compose import ROOT, compose, interpolate
from tests.support.procs import free_port, wait_for

DEPLOY = ROOT / "deploy" / "nginx"
TEMPLATE = DEPLOY / "templates" / "default.conf.template"
LIMITS = DEPLOY / "limits.envsh"
# Debian installs nginx in /usr/sbin, which is not on every user's PATH.
SEARCH_PATH = ":".join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])


def nginx_binary() -> str | None:
    return shutil.which("nginx", path=SEARCH_PATH)


def proxy_environment(**overrides: str) -> dict[str, str]:
    """The ``proxy`` service's environment with Compose's defaults, ``overrides``
    on top, plus what ``limits.envsh`` exports from it."""
    service = compose()["services"]["proxy"]
    env = {name: str(interpolate(value)) for name, value in service["environment"].items()}
    env.update(overrides)
    dump = "import json, os; print(json.dumps(dict(os.environ)))"
    done = subprocess.run(
        ["sh", "-c", '. "$0" && exec "$1" -c "$2"', str(LIMITS), sys.executable, dump],
        env={**env, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        capture_output=True,
        text=True,
        check=True,
    )
    exported: dict[str, str] = json.loads(done.stdout)
    return {**env, **{k: v for k, v in exported.items() if k.startswith("PROXY_")}}


def render(template: str, env: Mapping[str, str]) -> str:
    """The image's 20-envsubst-on-templates.sh: ``$NAME`` and ``${NAME}`` of a
    set variable whose name starts with ``NGINX_ENVSUBST_FILTER`` are
    replaced; anything else (nginx's own ``$variables``) is left alone."""
    prefix = re.escape(env.get("NGINX_ENVSUBST_FILTER", ""))
    pattern = re.compile(r"\$(\{)?(" + prefix + r"\w*)(?(1)\})")
    rendered = pattern.sub(lambda m: env.get(m.group(2), m.group(0)), template)
    left = re.findall(r"\$\{?PROXY_\w*", rendered)
    if left:
        raise ValueError(f"placeholders without a value: {sorted(set(left))}")
    return rendered


def rendered_config(**overrides: str) -> str:
    return render(TEMPLATE.read_text(), proxy_environment(**overrides))


def directive(config: str, name: str) -> str:
    """The value of the first ``name value;`` line (the server-wide one)."""
    match = re.search(rf"^\s*{re.escape(name)}\s+([^;]+);", config, re.M)
    if match is None:
        raise KeyError(name)
    return match.group(1).strip()


def seconds(value: str) -> float:
    """An nginx time (``10s``, ``330s``, ``1h``, ``500ms``) in seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value)
    if match is None:
        raise ValueError(value)
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]
    return int(match.group(1)) * unit


class NginxProxy:
    """nginx with the shipped configuration, in a process group of its own."""

    def __init__(self, directory: Path, upstream: str, **env: str) -> None:
        binary = nginx_binary()
        if binary is None:
            raise FileNotFoundError("nginx")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = proxy_environment(
            PROXY_LISTEN=f"127.0.0.1:{self.port}", PROXY_UPSTREAM=upstream, **env
        )
        self.config = render(TEMPLATE.read_text(), self.env)
        self.error_log = directory / "error.log"
        self.process: subprocess.Popen[bytes] | None = None

    def _main_config(self) -> str:
        """What the image's /etc/nginx/nginx.conf provides around conf.d/."""
        d = self.directory
        # As root, nginx would run its workers as "nobody", who cannot enter a
        # private temporary directory: keep them as the user running the test.
        user = ""
        if os.geteuid() == 0:
            user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};"
        mime = "include /etc/nginx/mime.types;" if Path("/etc/nginx/mime.types").exists() else ""
        return f"""
            {user}
            daemon off;
            worker_processes 1;
            pid {d}/nginx.pid;
            error_log {self.error_log} info;
            events {{ worker_connections 1024; }}
            http {{
                {mime}
                default_type application/octet-stream;
                access_log {d}/access.log;
                sendfile on;
                keepalive_timeout 65;
                client_body_temp_path {d}/tmp/body;
                proxy_temp_path {d}/tmp/proxy;
                fastcgi_temp_path {d}/tmp/fastcgi;
                uwsgi_temp_path {d}/tmp/uwsgi;
                scgi_temp_path {d}/tmp/scgi;
                include {d}/conf.d/*.conf;
            }}
        """

    def start(self) -> NginxProxy:
        (self.directory / "conf.d").mkdir(parents=True, exist_ok=True)
        (self.directory / "tmp").mkdir(exist_ok=True)
        (self.directory / "conf.d" / "default.conf").write_text(self.config)
        main = self.directory / "nginx.conf"
        main.write_text(self._main_config())
        command = [
            self.binary,
            "-p",
            str(self.directory),
            "-c",
            str(main),
            "-e",
            str(self.error_log),
        ]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
        if checked.returncode != 0:
            raise AssertionError(f"nginx -t refused the configuration:\n{checked.stderr}")
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(self._listening, 10, "nginx to listen", [self.error_log], interval=0.05)
        return self

    def _listening(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(
                f"nginx exited with {self.process.returncode}:\n{self.log()[-3000:]}"
            )
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def log(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()  # nginx's fast shutdown: the master ends its workers
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.process = None
