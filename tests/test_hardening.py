"""What a black-box probe broke, through the real server as ``make run`` starts
it (tests/support/live.py): each test failed before its fix.

One user, or a stranger, must not be able to grow the API's memory, take every
server thread, race past quotas or get a 500 out of malformed input.
"""

from __future__ import annotations

import random
import re
import socket
import string
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.live import LiveService
from tests.support.procs import wait_for


def _series(service: LiveService) -> dict[str, str]:
    text = requests.get(f"{service.url}/metrics", timeout=30).text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = value
    return samples


def _random_method(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 14)))


def _separate(
    service: LiveService, headers: dict[str, str], song: bytes, model: str = "hpss"
) -> requests.Response:
    """Upload ``song`` for a separation, as a client would."""
    return requests.post(
        f"{service.url}/api/v1/separations",
        headers=headers,
        files={"file": ("song.wav", song)},
        data={"model": model},
        timeout=120,
    )


# ------------------------------------------------------------- 1. metrics labels


def test_made_up_methods_do_not_grow_the_metrics(live) -> None:
    service = live()
    rng = random.Random(1)
    with requests.Session() as session:
        for _ in range(20):  # the first unknown method creates its "other" series
            assert session.request(_random_method(rng), f"{service.url}/healthz").status_code == 405
        _series(service)  # the scrape itself is counted from the second one on
        before = _series(service)
        for _ in range(1000):
            answer = session.request(_random_method(rng), f"{service.url}/healthz")
            assert answer.status_code == 405
            assert answer.json()["code"] == "method_not_allowed"
    after = _series(service)
    http = "aimusic_http_request_duration_seconds_count"
    assert len(after) == len(before), sorted(set(after) - set(before))[:10]
    other = [name for name in after if name.startswith(http) and 'method="other"' in name]
    assert other, "requests with made-up methods are counted as method=other"
    assert sum(float(after[name]) for name in other) >= 1020
    methods = {re.search(r'method="([^"]*)"', name)[1] for name in after if name.startswith(http)}
    assert methods <= {"GET", "other"}, methods


# ------------------------------------------------------------- 5. malformed JSON

DEEP = "[" * 200_000
HUGE = "1" + "0" * 5000


def test_deep_and_huge_json_answer_400_and_count_against_limits(live) -> None:
    service = live(LOGIN_RATE_LIMIT="5/minute")
    headers = service.register()
    bodies = {
        "/api/v1/auth/register": [DEEP, '{"email": "a@example.com", "password": ' + HUGE + "}"],
        "/api/v1/auth/api-keys": [DEEP, '{"name": ' + HUGE + "}"],
        "/api/v1/generations": [DEEP, '{"prompt": "calm piano", "seed": ' + HUGE + "}"],
    }
    for path, payloads in bodies.items():
        for body in payloads:
            answer = requests.post(
                service.url + path,
                data=body,
                headers={**headers, "Content-Type": "application/json"},
                timeout=30,
            )
            assert answer.status_code == 400, (path, answer.status_code, answer.text[:300])
            assert answer.json()["code"] == "bad_request"
            assert answer.json()["status"] == 400
    # Login: the rate limit's key function reads the body too. Each attempt
    # counts; the sixth and later get 429, none gets 500. (register above
    # counted against the same per-address login limit: one new account.)
    codes = []
    for body in [DEEP, '{"email": "a@example.com", "password": ' + HUGE + "}"] * 6:
        answer = requests.post(
            f"{service.url}/api/v1/auth/login",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        codes.append(answer.status_code)
        assert answer.headers["Content-Type"] == "application/json"
    assert 500 not in codes, codes
    assert set(codes) == {400, 429}, codes
    assert codes.index(429) <= 5, codes


# ------------------------------------------------------------- 7. job-creation rate limit


def test_only_created_jobs_spend_the_job_rate_limit(live) -> None:
    service = live(JOB_RATE_LIMIT="3/minute")
    headers = service.register()
    song = wav_bytes(sine_and_clicks(seconds=1.0))

    def separate(model: str) -> requests.Response:
        return _separate(service, headers, song, model)

    for _ in range(10):
        refused = separate("no-such-model")
        assert refused.status_code == 422, refused.text
    assert [separate("hpss").status_code for _ in range(3)] == [202, 202, 202]
    limited = separate("hpss")
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0


# ------------------------------------------------------------- 3. quota races


def _parallel(count: int, call) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _: call(), range(count)))


def test_parallel_submissions_cannot_pass_max_active_jobs(live) -> None:
    service = live(MAX_ACTIVE_JOBS="5", JOB_RATE_LIMIT="1000/minute")
    headers = service.register()
    song = wav_bytes(sine_and_clicks(seconds=1.0))

    def separate() -> requests.Response:
        return _separate(service, headers, song)

    with service.paused_workers():  # every job stays queued meanwhile
        answers = _parallel(20, separate)
        codes = sorted(answer.status_code for answer in answers)
        assert codes == [202] * 5 + [429] * 15, codes
        assert {a.json()["code"] for a in answers if a.status_code == 429} == {
            "too_many_active_jobs"
        }
        listed = requests.get(f"{service.url}/api/v1/jobs", headers=headers, timeout=30).json()
        assert listed["total"] == 5


def test_parallel_uploads_cannot_pass_the_storage_quota(live) -> None:
    service = live(MAX_STORAGE_MB="2", MAX_ACTIVE_JOBS="0", JOB_RATE_LIMIT="1000/minute")
    headers = service.register()
    song = wav_bytes(sine_and_clicks(seconds=7.15))  # 1.26 MB: one fits in 2 MB, two do not
    assert 1.2e6 < len(song) < 1.35e6

    def separate() -> requests.Response:
        return _separate(service, headers, song)

    answers = _parallel(10, separate)  # jobs that end keep their bytes: no need to pause
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [202] + [409] * 9, codes
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"storage_quota_exceeded"}
    me = requests.get(f"{service.url}/api/v1/auth/me", headers=headers, timeout=30).json()
    assert me["usage"]["stored_bytes"] <= 2 * 1024 * 1024, me


# ------------------------------------------------------------- 2. threads held by one user


def _open_raw(service: LiveService, request: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
    sock.sendall(request.encode())
    return sock


def _status_line(sock: socket.socket, timeout: float) -> str | None:
    """The response's status line if it has come, else None (still waiting)."""
    sock.settimeout(timeout)
    try:
        head = sock.recv(65536)
    except TimeoutError:
        return None
    except OSError:
        return "closed"
    return head.split(b"\r\n", 1)[0].decode() if head else "closed"


def _timed(call) -> float:
    started = time.monotonic()
    answer = call()
    assert answer.status_code == 200, answer.text
    return time.monotonic() - started


def test_one_users_streams_and_waits_leave_the_server_to_others(live, tmp_path) -> None:
    service = live(MAX_ACTIVE_JOBS="0", JOB_RATE_LIMIT="1000/minute", OPENAI_WAIT_SECONDS="12")
    greedy, other, openai_user = service.register(), service.register(), service.register()
    song = wav_bytes(sine_and_clicks(seconds=1.0))
    with service.paused_workers():  # jobs stay queued: every stream and wait stays open
        job = _separate(service, greedy, song).json()
        host = f"Host: 127.0.0.1:{service.port}\r\nAuthorization: {greedy['Authorization']}\r\n"
        requests_ = [
            f"GET /api/v1/jobs/{job['id']}/events HTTP/1.1\r\n{host}\r\n",
            f"GET /api/v1/jobs/{job['id']}?wait=60 HTTP/1.1\r\n{host}\r\n",
        ]
        socks = [_open_raw(service, requests_[i % 2]) for i in range(200)]
        time.sleep(3)
        lines = [_status_line(sock, 0.5) for sock in socks]
        held = [line for line in lines if line is None or " 200 " in line]
        refused = [line for line in lines if line is not None and " 429 " in line]
        assert len(held) <= 8 and len(held) + len(refused) == 200, lines

        # 25 OpenAI-style transcriptions at once: a few wait, the rest get 202 at once.
        def transcribe() -> tuple[int, float]:
            started = time.monotonic()
            answer = requests.post(
                f"{service.url}/v1/audio/transcriptions",
                headers=openai_user,
                files={"file": ("speech.wav", song)},
                data={"model": "whisper-1"},
                timeout=120,
            )
            return answer.status_code, time.monotonic() - started

        with ThreadPoolExecutor(max_workers=25) as pool:
            transcriptions = pool.submit(lambda: list(pool.map(lambda _: transcribe(), range(25))))
            # Meanwhile everyone else is served promptly.
            latencies = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                latencies.append(_timed(lambda: requests.get(f"{service.url}/healthz", timeout=5)))
                latencies.append(
                    _timed(
                        lambda: requests.get(f"{service.url}/api/v1/jobs", headers=other, timeout=5)
                    )
                )
            answered = transcriptions.result()
        latencies.sort()
        p99 = latencies[int(len(latencies) * 0.99)]
        assert p99 < 1.0, f"p99 {p99:.3f} s over {len(latencies)} requests"
        assert {status for status, _ in answered} == {202}, answered
        quick = [seconds for _, seconds in answered if seconds < 10]
        assert len(quick) >= 25 - 8, answered

        # Streams whose clients have gone give their threads back within seconds.
        for sock in socks:
            sock.close()
        time.sleep(3)
        again = [_open_raw(service, requests_[0]) for _ in range(8)]
        assert all(" 200 " in (_status_line(sock, 5) or "") for sock in again)
        for sock in again:
            sock.close()


# ------------------------------------------------------------- 7. OpenAI route, final states


def test_openai_route_never_answers_a_retried_5xx_for_an_ended_job(live) -> None:
    service = live(MAX_ACTIVE_JOBS="0", JOB_RATE_LIMIT="1000/minute", OPENAI_WAIT_SECONDS="60")
    headers = service.register()
    speech = wav_bytes(sine_and_clicks(seconds=1.0))

    def transcribe(model: str) -> requests.Response:
        return requests.post(
            f"{service.url}/v1/audio/transcriptions",
            headers=headers,
            files={"file": ("speech.wav", speech)},
            data={"model": model},
            timeout=120,
        )

    # A model the catalogue names but this machine has no weights for.
    missing = transcribe("small.en")
    assert missing.status_code == 422, missing.text
    body = missing.json()
    assert body["error"]["code"] == "model_unavailable"
    assert body["error"]["type"] == "server_error"
    assert missing.headers["x-should-retry"] == "false"
    assert body["url"] == missing.headers["Location"]

    # A job canceled while the request waits for it.
    with service.paused_workers(), ThreadPoolExecutor(max_workers=1) as pool:
        waiting = pool.submit(transcribe, "whisper-1")

        def queued() -> str | None:
            jobs = requests.get(
                f"{service.url}/api/v1/jobs?status=queued", headers=headers, timeout=30
            ).json()["items"]
            return jobs[0]["id"] if jobs else None

        job_id = wait_for(queued, 30, "the transcription to be queued")
        requests.post(f"{service.url}/api/v1/jobs/{job_id}/cancel", headers=headers, timeout=30)
        canceled = waiting.result(timeout=60)
    assert canceled.status_code == 409, canceled.text
    assert canceled.json()["error"]["code"] == "job_canceled"
    assert canceled.headers["x-should-retry"] == "false"


# ------------------------------------------------------------- 7. bearer scheme


def test_the_bearer_scheme_is_case_insensitive(live) -> None:
    service = live()
    token = service.register()["Authorization"].split(" ", 1)[1]
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        answer = requests.get(
            f"{service.url}/api/v1/auth/me",
            headers={"Authorization": f"{scheme} {token}"},
            timeout=30,
        )
        assert answer.status_code == 200, (scheme, answer.text)
    key = requests.post(
        f"{service.url}/api/v1/auth/api-keys",
        headers={"Authorization": f"Bearer {token}"},
        json={"name": "probe"},
        timeout=30,
    ).json()["key"]
    answer = requests.get(
        f"{service.url}/api/v1/jobs", headers={"Authorization": f"BEARER {key}"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    wrong = requests.get(
        f"{service.url}/api/v1/auth/me", headers={"Authorization": f"Basic {token}"}, timeout=30
    )
    assert wrong.status_code == 401
