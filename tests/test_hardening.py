"""What a black-box probe broke, through the real server as ``make run`` starts
it (tests/support/live.py): each test failed before its fix.

One user, or a stranger, must not be able to grow the API's memory, take every
server thread, race past quotas or get a 500 out of malformed input.
"""

from __future__ import annotations

import random
import re
import string

import requests

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
