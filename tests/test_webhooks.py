"""Webhooks: a local receiver gets the signed job JSON, with retries; the SSRF guard
refuses inward addresses at submit and again at delivery."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from app.errors import ServiceError
from app.services import webhooks
from tests.support.apps import BOTH_DATABASES, make_app, register_and_login
from tests.support.procs import wait_for
from tests.support.webhooks import Receiver, verify_signature


@pytest.fixture
def hook_app(eager_app: Callable[..., Flask]) -> Flask:
    """Jobs and deliveries run inline (eager), private receivers allowed."""
    return eager_app(WEBHOOK_ALLOW_PRIVATE=True)


@pytest.fixture
def strict_app(eager_app: Callable[..., Flask]) -> Flask:
    """The default: the SSRF guard is on."""
    return eager_app()


def _separate(client: Any, headers: dict[str, str], song_wav: bytes, **fields: Any) -> Any:
    return client.post(
        "/api/v1/separations",
        data={"file": (io.BytesIO(song_wav), "song.wav"), "model": "hpss", **fields},
        headers=headers,
        content_type="multipart/form-data",
    )


@contextlib.contextmanager
def fake_dns(answers: dict[str, Callable[[], list[str]]]) -> Iterator[None]:
    """``socket.getaddrinfo`` answering for the given names (others go to the real one)."""
    real = socket.getaddrinfo

    def lookup(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host in answers:
            out = []
            for address in answers[host]():
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sockaddr = (address, port, 0, 0) if ":" in address else (address, port)
                out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
            return out
        return real(host, port, *args, **kwargs)

    socket.getaddrinfo = lookup
    try:
        yield
    finally:
        socket.getaddrinfo = real


@BOTH_DATABASES
def test_a_finished_job_is_posted_signed_and_retried_after_a_500(
    hook_app: Flask, song_wav: bytes
) -> None:
    client = hook_app.test_client()
    headers = register_and_login(client)
    with Receiver([500, 200]) as receiver:
        response = _separate(client, headers, song_wav, callback_url=receiver.url())
        assert response.status_code == 202, response.json
        job_id = response.json["id"]
    job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json
    assert job["status"] == "succeeded"
    assert job["callback_url"] == receiver.url()
    assert job["webhook"]["state"] == "delivered"
    assert job["webhook"]["attempts"] == 2
    assert job["webhook"]["last_status"] == 200 and job["webhook"]["last_error"] is None

    assert len(receiver.requests) == 2
    first, second = receiver.requests
    assert first["path"] == "/hook?token=abc"
    assert first["headers"]["X-AMS-Event"] == "job.succeeded"
    assert first["headers"]["Content-Type"] == "application/json"
    # The same event id on every try, for de-duplication; the try number counts.
    assert first["headers"]["X-AMS-Event-Id"] == second["headers"]["X-AMS-Event-Id"]
    assert first["headers"]["X-AMS-Event-Id"] == job["webhook"]["event_id"]
    assert [r["headers"]["X-AMS-Attempt"] for r in receiver.requests] == ["1", "2"]

    secret = client.get("/api/v1/webhooks/secret", headers=headers).json["secret"]
    assert verify_signature(secret, second)
    tampered = {**second, "body": second["body"].replace(b"succeeded", b"failed")}
    assert not verify_signature(secret, tampered)
    # Another account's secret does not verify it.
    other = client.get("/api/v1/webhooks/secret", headers=register_and_login(client)).json
    assert other["secret"] != secret and not verify_signature(other["secret"], second)

    # The body is the job as GET /jobs/{id} showed it when it ended.
    sent = json.loads(second["body"])
    assert sent["id"] == job_id and sent["status"] == "succeeded"
    assert sent["result"] == job["result"] and sent["url"] == job["url"]


@BOTH_DATABASES
def test_a_receiver_that_keeps_failing_gets_five_tries(hook_app: Flask, song_wav: bytes) -> None:
    client = hook_app.test_client()
    headers = register_and_login(client)
    with Receiver([503]) as receiver:
        job_id = _separate(client, headers, song_wav, callback_url=receiver.url()).json["id"]
    assert len(receiver.requests) == 1 + len(webhooks.RETRY_DELAYS) == 5
    record = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json["webhook"]
    assert record["state"] == "failed" and record["attempts"] == 5
    assert record["last_status"] == 503 and "503" in record["last_error"]


@BOTH_DATABASES
def test_retries_follow_the_backoff_schedule(
    hook_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside eager mode each retry waits 10 s, 1 min, 5 min, then 30 min, all
    shorter than Redis's visibility timeout (a longer one would duplicate it)."""
    from app.tasks import webhooks as tasks

    countdowns: list[int] = []

    class Retried(Exception):
        pass

    def fake_retry(countdown: int, exc: Exception) -> Exception:
        countdowns.append(countdown)
        return Retried()

    def failing(*args: Any) -> int:
        raise webhooks.DeliveryError("HTTP 500", 500)

    monkeypatch.setattr(webhooks, "attempt", failing)
    monkeypatch.setattr(tasks.deliver, "retry", fake_retry)
    for tries in range(5):
        tasks.deliver.push_request(retries=tries)
        try:
            if tries < 4:
                with pytest.raises(Retried):
                    tasks.deliver.run("j", "o", "http://x", "job.succeeded", "e", "{}")
            else:
                assert tasks.deliver.run("j", "o", "http://x", "job.succeeded", "e", "{}") is None
        finally:
            tasks.deliver.pop_request()
    assert countdowns == [10, 60, 300, 1800]
    vt = hook_app.config["CELERY"]["broker_transport_options"].get("visibility_timeout", 3600)
    assert max(countdowns) < vt
    assert hook_app.config["CELERY"]["task_routes"]["app.tasks.webhooks.*"] == {"queue": "webhooks"}


@BOTH_DATABASES
def test_cancel_sends_the_canceled_job(queued_app: Flask, song_wav: bytes) -> None:
    queued_app.config["WEBHOOK_ALLOW_PRIVATE"] = True
    client = queued_app.test_client()
    headers = register_and_login(client)
    with Receiver([204]) as receiver:
        job_id = _separate(client, headers, song_wav, callback_url=receiver.url()).json["id"]
        assert client.get(f"/api/v1/jobs/{job_id}", headers=headers).json["webhook"] is None
        queued_app.extensions["celery"].conf.task_always_eager = True  # deliver inline
        assert client.post(f"/api/v1/jobs/{job_id}/cancel", headers=headers).status_code == 200
    assert len(receiver.requests) == 1
    assert receiver.requests[0]["headers"]["X-AMS-Event"] == "job.canceled"
    assert json.loads(receiver.requests[0]["body"])["status"] == "canceled"
    record = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json["webhook"]
    assert record["state"] == "delivered" and record["last_status"] == 204


@BOTH_DATABASES
def test_a_failed_job_is_sent_with_its_error(hook_app: Flask) -> None:
    client = hook_app.test_client()
    headers = register_and_login(client)
    broken = b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 64
    with Receiver([200]) as receiver:
        response = client.post(
            "/api/v1/generations",
            json={"prompt": "calm piano", "duration": 1, "model": "no-such-model"},
            headers=headers,
        )
        assert response.status_code == 422  # refused at submit: no job, no webhook
        response = _separate(client, headers, broken, callback_url=receiver.url())
        assert response.status_code in (415, 422)  # refused at upload: nothing sent
        assert receiver.requests == []
        # A job that fails while running: a Demucs model whose weights are missing.
        hook_app.config["ALLOW_MODEL_DOWNLOAD"] = False
        hook_app.config["MODELS_DIR"] = str(Path(hook_app.config["DATA_DIR"]) / "empty-models")
        response = client.post(
            "/api/v1/separations",
            data={
                "file": (io.BytesIO(_song()), "song.wav"),
                "model": "htdemucs",
                "callback_url": receiver.url(),
            },
            headers=headers,
            content_type="multipart/form-data",
        )
        assert response.status_code == 202, response.json
    job = client.get(f"/api/v1/jobs/{response.json['id']}", headers=headers).json
    assert job["status"] == "failed"
    assert len(receiver.requests) == 1
    sent = json.loads(receiver.requests[0]["body"])
    assert receiver.requests[0]["headers"]["X-AMS-Event"] == "job.failed"
    assert sent["error"] == job["error"] and sent["error"]["code"]


def _song() -> bytes:
    from tests.support.audio import sine_and_clicks, wav_bytes

    return wav_bytes(sine_and_clicks(1.0))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://127.1.2.3:8080/hook",
        "http://10.0.0.5/hook",
        "http://172.16.3.4/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fe80::1]/hook",
        "http://[fd00::1]/hook",
        "http://0.0.0.0/hook",
        "http://100.64.0.1/hook",
        "http://224.0.0.1/hook",
        "http://255.255.255.255/hook",
        "http://localhost/hook",
        "http://localhost:5000/api/v1/auth/me",
    ],
)
def test_the_ssrf_guard_refuses_inward_addresses(strict_app: Flask, url: str) -> None:
    with strict_app.app_context(), pytest.raises(ServiceError) as caught:
        webhooks.check(url)
    assert caught.value.code == "callback_url_not_allowed"
    assert caught.value.status == 422
    assert "callback_url" in (caught.value.errors or {})


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "gopher://example.com/",
        "javascript:alert(1)",
        "http://user:secret@example.com/hook",
        "http://:token@example.com/hook",
        "http:///hook",
        "http://exa mple.com/hook",
        "http://example.com/\r\nX-Injected: 1",
        "http://example.com:99999/hook",
        "https://example.com/" + "a" * 2100,
        "http://no-such-host.invalid/hook",
    ],
)
def test_malformed_callback_urls_are_refused(strict_app: Flask, url: str) -> None:
    with strict_app.app_context(), pytest.raises(ServiceError) as caught:
        webhooks.check(url)
    assert caught.value.code == "invalid_callback_url"


def test_public_addresses_pass_the_guard(strict_app: Flask) -> None:
    with strict_app.app_context(), fake_dns({"hooks.example.com": lambda: ["93.184.216.34"]}):
        target = webhooks.check("https://hooks.example.com/in?x=1")
        assert target.addresses == ("93.184.216.34",)
        assert (target.host, target.port, target.path) == ("hooks.example.com", 443, "/in?x=1")
        assert webhooks.check("http://[2606:4700::1111]:8080/").addresses == ("2606:4700::1111",)
    # A name with one public and one inward address is refused as a whole.
    with (
        strict_app.app_context(),
        fake_dns({"mixed.example.com": lambda: ["93.184.216.34", "127.0.0.1"]}),
        pytest.raises(ServiceError) as caught,
    ):
        webhooks.check("https://mixed.example.com/")
    assert caught.value.code == "callback_url_not_allowed"


@BOTH_DATABASES
def test_submit_refuses_an_inward_callback_and_stores_nothing(
    strict_app: Flask, song_wav: bytes
) -> None:
    client = strict_app.test_client()
    headers = register_and_login(client)
    for url in ("http://127.0.0.1:9/hook", "http://169.254.169.254/", "http://localhost/"):
        response = _separate(client, headers, song_wav, callback_url=url)
        assert response.status_code == 422, response.json
        assert response.json["code"] == "callback_url_not_allowed"
        assert "callback_url" in response.json["errors"]
    response = _separate(client, headers, song_wav, callback_url="ftp://example.com/")
    assert response.status_code == 422 and response.json["code"] == "invalid_callback_url"
    response = client.post(
        "/api/v1/generations",
        json={"prompt": "calm piano", "callback_url": "http://10.1.2.3/"},
        headers=headers,
    )
    assert response.status_code == 422 and response.json["code"] == "callback_url_not_allowed"
    assert client.get("/api/v1/jobs", headers=headers).json["total"] == 0
    jobs_dir = Path(strict_app.config["DATA_DIR"]) / "jobs"
    assert not jobs_dir.exists() or list(jobs_dir.iterdir()) == []


@BOTH_DATABASES
def test_every_job_route_takes_a_callback_url(hook_app: Flask) -> None:
    spec = hook_app.test_client().get("/openapi.json").json
    for path in ("separations", "transcriptions", "karaoke", "analyses"):
        body = spec["paths"][f"/api/v1/{path}"]["post"]["requestBody"]["content"]
        schema = body["multipart/form-data"]["schema"]
        ref = schema["$ref"].rsplit("/", 1)[-1]
        assert "callback_url" in spec["components"]["schemas"][ref]["properties"], path
    for name in ("Generation", "GenerationForm"):
        assert "callback_url" in spec["components"]["schemas"][name]["properties"]
    job = spec["components"]["schemas"]["Job"]["properties"]
    assert {"callback_url", "webhook", "events_url"} <= set(job)


@BOTH_DATABASES
def test_dns_rebinding_is_caught_at_delivery(strict_app: Flask, song_wav: bytes) -> None:
    """The name was public at submit and points inward at delivery: nothing is sent."""
    client = strict_app.test_client()
    headers = register_and_login(client)
    with Receiver([200]) as receiver:
        calls = {"n": 0}

        def rebinding() -> list[str]:
            calls["n"] += 1
            return ["93.184.216.34"] if calls["n"] == 1 else ["127.0.0.1"]

        with fake_dns({"rebind.example.com": rebinding}):
            response = _separate(
                client, headers, song_wav, callback_url=receiver.url("rebind.example.com")
            )
        assert response.status_code == 202, response.json
    assert receiver.requests == []
    record = client.get(f"/api/v1/jobs/{response.json['id']}", headers=headers).json["webhook"]
    assert record["state"] == "failed" and record["attempts"] == 1  # not retried
    assert "127.0.0.1" in record["last_error"]


def test_delivery_connects_to_the_vetted_address_with_the_url_host(
    hook_app: Flask, song_wav: bytes
) -> None:
    client = hook_app.test_client()
    headers = register_and_login(client)
    with (
        Receiver([200]) as receiver,
        fake_dns({"receiver.example.com": lambda: ["127.0.0.1"]}),
    ):
        response = _separate(
            client, headers, song_wav, callback_url=receiver.url("receiver.example.com")
        )
        assert response.status_code == 202
    assert len(receiver.requests) == 1
    assert receiver.requests[0]["headers"]["Host"] == f"receiver.example.com:{receiver.port}"


@BOTH_DATABASES
def test_redirects_are_not_followed(hook_app: Flask, song_wav: bytes) -> None:
    client = hook_app.test_client()
    headers = register_and_login(client)
    with Receiver([302]) as receiver:
        job_id = _separate(client, headers, song_wav, callback_url=receiver.url()).json["id"]
    record = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json["webhook"]
    assert record["state"] == "failed" and record["last_status"] == 302
    assert len(receiver.requests) == 5  # every try got the redirect; none followed it


@BOTH_DATABASES
def test_the_secret_route_needs_a_login(hook_app: Flask) -> None:
    client = hook_app.test_client()
    assert client.get("/api/v1/webhooks/secret").status_code == 401
    body = client.get("/api/v1/webhooks/secret", headers=register_and_login(client)).json
    assert len(body["secret"]) == 64 and body["algorithm"] == "HMAC-SHA256"


def test_https_delivery_checks_the_certificate_against_the_url_host(
    hook_app: Flask, song_wav: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Connected to the vetted address, TLS still sends the URL's host as SNI
    and verifies the certificate against it."""
    import shutil
    import ssl
    import subprocess

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed; HTTPS webhook test skipped")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=receiver.example.com", "-addext", "subjectAltName=DNS:receiver.example.com",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    trusted = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(webhooks, "tls_context", lambda: trusted)
    client = hook_app.test_client()
    headers = register_and_login(client)
    names = {
        "receiver.example.com": lambda: ["127.0.0.1"],
        "other.example.com": lambda: ["127.0.0.1"],
    }
    with Receiver([200]) as receiver, fake_dns(names):
        server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_side.load_cert_chain(str(cert), str(key))
        receiver.server.socket = server_side.wrap_socket(receiver.server.socket, server_side=True)
        url = f"https://receiver.example.com:{receiver.port}/hook"
        good = _separate(client, headers, song_wav, callback_url=url).json["id"]
        # The same server under a name its certificate does not carry: refused.
        url = f"https://other.example.com:{receiver.port}/hook"
        bad = _separate(client, headers, song_wav, callback_url=url).json["id"]
    record = client.get(f"/api/v1/jobs/{good}", headers=headers).json["webhook"]
    assert record["state"] == "delivered", record
    assert receiver.requests[0]["headers"]["Host"] == f"receiver.example.com:{receiver.port}"
    record = client.get(f"/api/v1/jobs/{bad}", headers=headers).json["webhook"]
    assert record["state"] == "failed" and "SSL" in record["last_error"], record
    assert len(receiver.requests) == 1


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (skips the test without openssl)."""
    import shutil
    import subprocess

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed; HTTPS webhook test skipped")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _post_within(url: str, config: dict[str, Any], seconds: float) -> dict[str, Any]:
    """``post()`` in a thread given ``seconds`` to end: its status or error,
    and how long it took. A thread still waiting is left to the receiver's
    exit, which frees it: a post() without a deadline fails the test instead
    of hanging it."""
    outcome: dict[str, Any] = {}

    def deliver() -> None:
        started = time.monotonic()
        try:
            outcome["status"] = webhooks.post(
                url, {"Content-Type": "application/json"}, b"{}", config
            )
        except Exception as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=deliver, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"post() still waited on the receiver after {seconds:g} s"
    return outcome


@pytest.mark.parametrize("mode", ["http", "https", "https-handshake"])
def test_a_trickling_receiver_is_cut_at_the_deadline(
    mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver sending a byte a second never trips a per-read timeout; the
    deadline ends the try anyway, over TLS too, handshake included."""
    import ssl

    from tests.support.trickle import Trickler

    deadline = 2.0
    config = {"WEBHOOK_ALLOW_PRIVATE": True, "WEBHOOK_DEADLINE_SECONDS": deadline}
    server_tls: ssl.SSLContext | None = None
    if mode != "http":
        cert, key = _certificate(tmp_path)
        trusted = ssl.create_default_context(cafile=str(cert))
        monkeypatch.setattr(webhooks, "tls_context", lambda: trusted)
        if mode == "https":
            server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            server_tls.load_cert_chain(str(cert), str(key))
    with Trickler(tls=server_tls, stall_handshake=mode == "https-handshake") as receiver:
        url = receiver.url(scheme="https" if mode != "http" else "http")
        outcome = _post_within(url, config, deadline + 1.5)
    assert isinstance(outcome.get("error"), webhooks.DeliveryError), outcome
    assert "deadline" in str(outcome["error"]), outcome
    assert outcome["seconds"] >= deadline - 0.1, outcome
    assert len(receiver.connections) == 1
    if mode != "https-handshake":
        assert receiver.connections[0].request.startswith(b"POST /hook"), receiver.connections


def test_a_2xx_whose_body_trickles_counts_as_delivered() -> None:
    """The status line is the answer; the deadline only stops the wait for the rest."""
    from tests.support.trickle import Trickler

    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    config = {"WEBHOOK_ALLOW_PRIVATE": True, "WEBHOOK_DEADLINE_SECONDS": 1.0}
    with Trickler(answer=head + b"x" * 1000, at_once=len(head)) as receiver:
        outcome = _post_within(receiver.url(), config, 2.5)
    assert outcome.get("status") == 200, outcome


def test_the_deadline_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="WEBHOOK_DEADLINE_SECONDS"):
        make_app(tmp_path / "data", WEBHOOK_DEADLINE_SECONDS=0)


def test_a_trickling_receiver_delays_no_job_under_make_run(live: Callable[..., Any]) -> None:
    """Through the real server as ``make run`` starts it: while a delivery
    trickles, the next job runs at once (deliveries have a worker of their
    own), and the delivery is cut at the deadline and retried later."""
    import requests

    from tests.support.audio import sine_and_clicks, wav_bytes
    from tests.support.trickle import Trickler

    deadline = 3.0
    service = live(WEBHOOK_ALLOW_PRIVATE="1", WEBHOOK_DEADLINE_SECONDS=f"{deadline:g}")
    headers = service.register()
    song = wav_bytes(sine_and_clicks(seconds=2.0))

    def separate(**fields: str) -> str:
        response = requests.post(
            f"{service.url}/api/v1/separations",
            headers=headers,
            files={"file": ("song.wav", song)},
            data={"model": "hpss", **fields},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    with Trickler() as receiver:
        first = separate(callback_url=receiver.url())
        assert service.wait_for_job(headers, first)["status"] == "succeeded"
        delivery = receiver.wait_for_connection(timeout=30)
        second = separate()
        job = service.wait_for_job(headers, second, timeout=30)
        second_done = time.monotonic()
        assert job["status"] == "succeeded", job
        # Done while the delivery was still trickling, not after it.
        assert delivery.closed is None or second_done < delivery.closed, (
            f"the second job ended {second_done - delivery.opened:.1f} s after the delivery "
            f"began, {second_done - delivery.closed:.1f} s after it was cut: it waited for it"
        )

        def cut() -> Any:
            job = requests.get(f"{service.url}/api/v1/jobs/{first}", headers=headers, timeout=30)
            record = job.json()["webhook"]
            return record if record["state"] != "pending" else None

        record = wait_for(cut, deadline + 15, "the delivery to be cut", [service.log_path])
        assert delivery.closed is not None
    assert record["state"] == "retrying" and record["attempts"] == 1, record
    assert "deadline" in record["last_error"], record
    assert record["last_status"] is None, record
    assert deadline - 0.5 < delivery.closed - delivery.opened < deadline + 2, (
        delivery.closed - delivery.opened
    )
