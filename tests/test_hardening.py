"""What a black-box probe broke, through the real server as ``make run`` starts
it (tests/support/live.py): each test failed before its fix.

One user, or a stranger, must not be able to grow the API's memory, take every
server thread, race past quotas or get a 500 out of malformed input.
"""

from __future__ import annotations

import random
import re
import string
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.conftest import sine_and_clicks, wav_bytes
from tests.support.live import LiveService


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
        return requests.post(
            f"{service.url}/api/v1/separations",
            headers=headers,
            files={"file": ("song.wav", song)},
            data={"model": model},
            timeout=60,
        )

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
        return requests.post(
            f"{service.url}/api/v1/separations",
            headers=headers,
            files={"file": ("song.wav", song)},
            data={"model": "hpss"},
            timeout=120,
        )

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
        return requests.post(
            f"{service.url}/api/v1/separations",
            headers=headers,
            files={"file": ("song.wav", song)},
            data={"model": "hpss"},
            timeout=120,
        )

    with service.paused_workers():
        answers = _parallel(10, separate)
    codes = sorted(answer.status_code for answer in answers)
    assert codes == [202] + [409] * 9, codes
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"storage_quota_exceeded"}
    me = requests.get(f"{service.url}/api/v1/auth/me", headers=headers, timeout=30).json()
    assert me["usage"]["stored_bytes"] <= 2 * 1024 * 1024, me
