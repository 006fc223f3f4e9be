"""Result downloads answer conditional and range requests as RFC 9110 says.

Through the real server (gunicorn, as ``make run`` starts it), because
what a client receives for a conditional request depends on more than the
view: the status, which headers survive and whether a body is sent are
decided on the way out. One hpss job is made once; every case downloads one
of its files with raw headers, as curl or a browser would send them.

Sections of RFC 9110 named below: 13.1.1 If-Match, 13.1.2 If-None-Match,
13.1.3 If-Modified-Since, 13.1.4 If-Unmodified-Since, 13.1.5 If-Range,
13.2.2 the order in which preconditions are evaluated, 14.1.3 suffix ranges,
14.2 Range (unknown units MUST be ignored; any Range MAY be ignored).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from werkzeug.http import http_date, parse_date

from tests.support.audio import sine_and_clicks, wav_bytes
from tests.support.live import live_service


@dataclass(frozen=True)
class Download:
    url: str
    auth: dict[str, str]
    body: bytes
    etag: str
    last_modified: str

    @property
    def size(self) -> int:
        return len(self.body)

    def get(self, method: str = "GET", **headers: str) -> requests.Response:
        # Header names with dashes: the keyword arguments use underscores.
        sent = {name.replace("_", "-"): value for name, value in headers.items()}
        return requests.request(method, self.url, headers={**self.auth, **sent}, timeout=30)

    def date(self, days: float) -> str:
        """The file's Last-Modified moved by ``days``, as an HTTP-date."""
        modified = parse_date(self.last_modified)
        assert modified is not None
        return http_date(modified + timedelta(days=days))


@pytest.fixture(scope="module")
def download(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Download]:
    """One finished hpss separation on one running service, for every case."""
    directory: Path = tmp_path_factory.mktemp("downloads")
    with live_service(directory) as service:
        auth = service.register()
        audio = wav_bytes(sine_and_clicks(seconds=2.0))
        created = requests.post(
            f"{service.url}/api/v1/separations",
            files={"file": ("song.wav", io.BytesIO(audio), "audio/wav")},
            data={"model": "hpss"},
            headers=auth,
            timeout=60,
        )
        assert created.status_code == 202, created.text
        job = service.wait_for_job(auth, created.json()["id"])
        assert job["status"] == "succeeded", job
        url = service.url + job["result"]["files"][0]["url"]
        whole = requests.get(url, headers=auth, timeout=30)
        assert whole.status_code == 200, whole.text
        yield Download(
            url=url,
            auth=auth,
            body=whole.content,
            etag=whole.headers["ETag"],
            last_modified=whole.headers["Last-Modified"],
        )


def assert_whole_file(response: requests.Response, download: Download) -> None:
    assert response.status_code == 200, (response.status_code, response.headers)
    assert "Content-Range" not in response.headers
    assert response.content == download.body


def assert_precondition_failed(response: requests.Response, download: Download) -> None:
    assert response.status_code == 412, (response.status_code, response.headers)
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["code"] == "precondition_failed"
    assert response.json()["status"] == 412
    assert int(response.headers["Content-Length"]) == len(response.content) < download.size


def assert_not_modified(response: requests.Response, download: Download) -> None:
    assert response.status_code == 304, (response.status_code, response.headers)
    assert response.content == b""
    assert response.headers["ETag"] == download.etag


# --- the plain download -----------------------------------------------------


def test_the_file_has_strong_validators(download: Download) -> None:
    assert download.size > 1000
    assert download.etag.startswith('"')  # strong: usable with If-Match and If-Range
    response = download.get()
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["Last-Modified"] == download.last_modified


def test_head_sends_the_headers_without_the_file(download: Download) -> None:
    response = download.get("HEAD")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Content-Length"] == str(download.size)
    assert response.headers["ETag"] == download.etag


# --- If-Match (13.1.1): strong comparison; failure is 412 without the file ---


def test_if_match_with_the_current_etag_sends_the_file(download: Download) -> None:
    assert_whole_file(download.get(If_Match=download.etag), download)
    assert_whole_file(download.get(If_Match=f'"other", {download.etag}'), download)


def test_if_match_star_passes_for_an_existing_file(download: Download) -> None:
    assert_whole_file(download.get(If_Match="*"), download)


def test_if_match_with_another_etag_is_412_without_the_file(download: Download) -> None:
    assert_precondition_failed(download.get(If_Match='"not-the-etag"'), download)


def test_if_match_never_matches_a_weak_etag(download: Download) -> None:
    assert_precondition_failed(download.get(If_Match=f"W/{download.etag}"), download)


def test_if_match_failing_comes_before_the_range(download: Download) -> None:
    """13.2.2: preconditions first, then Range: neither a 206 nor a 416."""
    stale = '"not-the-etag"'
    assert_precondition_failed(download.get(If_Match=stale, Range="bytes=0-9"), download)
    unsatisfiable = f"bytes={download.size}-"
    assert_precondition_failed(download.get(If_Match=stale, Range=unsatisfiable), download)


def test_if_match_failing_on_head_is_412(download: Download) -> None:
    response = download.get("HEAD", If_Match='"not-the-etag"')
    assert response.status_code == 412
    assert response.content == b""


# --- If-Unmodified-Since (13.1.4) --------------------------------------------


def test_if_unmodified_since_before_the_change_is_412(download: Download) -> None:
    assert_precondition_failed(download.get(If_Unmodified_Since=download.date(-1)), download)
    # The two obsolete formats every recipient must accept (5.6.7).
    day_before = parse_date(download.date(-1))
    assert day_before is not None
    for layout in ("%A, %d-%b-%y %H:%M:%S GMT", "%a %b %e %H:%M:%S %Y"):
        since = day_before.strftime(layout)
        assert_precondition_failed(download.get(If_Unmodified_Since=since), download)


def test_if_unmodified_since_at_or_after_the_change_sends_the_file(download: Download) -> None:
    assert_whole_file(download.get(If_Unmodified_Since=download.last_modified), download)
    assert_whole_file(download.get(If_Unmodified_Since=download.date(+1)), download)


def test_if_unmodified_since_that_is_no_date_is_ignored(download: Download) -> None:
    assert_whole_file(download.get(If_Unmodified_Since="yesterday"), download)
    two_dates = f"{download.date(-1)}, {download.date(-2)}"
    assert_whole_file(download.get(If_Unmodified_Since=two_dates), download)


def test_if_unmodified_since_is_ignored_beside_if_match(download: Download) -> None:
    response = download.get(If_Match=download.etag, If_Unmodified_Since=download.date(-1))
    assert_whole_file(response, download)


# --- If-None-Match / If-Modified-Since (13.1.2, 13.1.3): 304 -----------------


def test_if_none_match_with_the_current_etag_is_304(download: Download) -> None:
    assert_not_modified(download.get(If_None_Match=download.etag), download)
    assert_not_modified(download.get(If_None_Match=f"W/{download.etag}"), download)  # weak
    assert_not_modified(download.get(If_None_Match="*"), download)
    assert_not_modified(download.get("HEAD", If_None_Match=download.etag), download)


def test_if_none_match_with_another_etag_sends_the_file(download: Download) -> None:
    assert_whole_file(download.get(If_None_Match='"not-the-etag"'), download)


def test_if_modified_since_is_304_when_unchanged(download: Download) -> None:
    assert_not_modified(download.get(If_Modified_Since=download.last_modified), download)
    assert_whole_file(download.get(If_Modified_Since=download.date(-1)), download)


def test_not_modified_comes_before_the_range(download: Download) -> None:
    """13.2.2: a 304 is decided before Range is looked at."""
    response = download.get(If_None_Match=download.etag, Range="bytes=0-9")
    assert_not_modified(response, download)
    response = download.get(If_Modified_Since=download.last_modified, Range="bytes=0-9")
    assert_not_modified(response, download)


def test_if_match_passing_leaves_if_modified_since_to_answer_304(download: Download) -> None:
    response = download.get(If_Match=download.etag, If_Modified_Since=download.last_modified)
    assert_not_modified(response, download)


# --- Range (14.1.3, 14.2) ----------------------------------------------------


def test_a_single_range(download: Download) -> None:
    response = download.get(Range="bytes=100-199")
    assert response.status_code == 206
    assert response.content == download.body[100:200]
    assert response.headers["Content-Range"] == f"bytes 100-199/{download.size}"


def test_a_suffix_range(download: Download) -> None:
    response = download.get(Range="bytes=-10")
    assert response.status_code == 206
    assert response.content == download.body[-10:]
    size = download.size
    assert response.headers["Content-Range"] == f"bytes {size - 10}-{size - 1}/{size}"


def test_a_suffix_longer_than_the_file_is_the_whole_file(download: Download) -> None:
    size = download.size
    for suffix in (size, size + 1, 10 * size):
        response = download.get(Range=f"bytes=-{suffix}")
        assert response.status_code == 206, (suffix, response.status_code, response.text[:200])
        assert response.headers["Content-Range"] == f"bytes 0-{size - 1}/{size}"
        assert response.content == download.body


def test_several_ranges_send_the_whole_file(download: Download) -> None:
    assert_whole_file(download.get(Range="bytes=0-1,5-9"), download)
    assert_whole_file(download.get(Range="bytes=5-9, 0-1"), download)


def test_an_unknown_range_unit_is_ignored(download: Download) -> None:
    assert_whole_file(download.get(Range="items=0-1"), download)
    assert_whole_file(download.get(Range="items=first"), download)


def test_an_unsatisfiable_range_is_416_with_the_size(download: Download) -> None:
    size = download.size
    for spec in (f"bytes={size}-", f"bytes={size + 100}-{size + 200}", "bytes=-0"):
        response = download.get(Range=spec)
        assert response.status_code == 416, (spec, response.status_code)
        assert response.headers["Content-Range"] == f"bytes */{size}"
        assert response.json()["code"] == "range_not_satisfiable"


# --- If-Range (13.1.5): a stale validator sends the whole file ---------------


def test_if_range_with_the_current_validator_sends_the_range(download: Download) -> None:
    for validator in (download.etag, download.last_modified):
        response = download.get(Range="bytes=0-9", If_Range=validator)
        assert response.status_code == 206, validator
        assert response.content == download.body[:10]


def test_if_range_with_a_stale_validator_sends_the_whole_file(download: Download) -> None:
    for validator in ('"not-the-etag"', download.date(-1)):
        assert_whole_file(download.get(Range="bytes=0-9", If_Range=validator), download)


def test_if_range_needs_an_exact_strong_validator(download: Download) -> None:
    """A weak ETag never matches, and a date must be the Last-Modified itself."""
    for validator in (f"W/{download.etag}", download.date(+1)):
        assert_whole_file(download.get(Range="bytes=0-9", If_Range=validator), download)


def test_if_range_stale_turns_an_unsatisfiable_range_into_the_whole_file(
    download: Download,
) -> None:
    response = download.get(Range=f"bytes={download.size}-", If_Range='"not-the-etag"')
    assert_whole_file(response, download)
