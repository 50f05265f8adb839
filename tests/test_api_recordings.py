"""GET/HEAD /recordings/{filename}: exact names only, no symlinks, byte ranges (RFC 9110 §14)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from api_support import Api, check_response, error_of, run_api
from callbridge.api.recordings import ByteRange, RangeNotSatisfiable, parse_range

CALL_ID = "5deb67aa-d54d-4536-9a25-a29813b3bddd"
NAME = f"crm_{CALL_ID}.wav"
URL = f"/recordings/{NAME}"
#: 1000 bytes that tell every offset apart.
DATA = bytes(range(250)) * 4


def with_recording(api: Api, data: bytes = DATA) -> Path:
    path = api.recordings / NAME
    path.write_bytes(data)
    return path


# -- parse_range, the decisions in one table ---------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-99", ByteRange(0, 99)),
        ("bytes=100-", ByteRange(100, 999)),
        ("bytes=-50", ByteRange(950, 999)),
        ("bytes=-5000", ByteRange(0, 999)),  # a suffix longer than the file is all of it
        ("bytes=990-5000", ByteRange(990, 999)),  # the last position is clamped
        ("bytes=999-999", ByteRange(999, 999)),
        ("BYTES=0-0", ByteRange(0, 0)),
        (" bytes=0-9 ", ByteRange(0, 9)),
        ("bytes=0-9,20-29", None),  # several ranges: ignored, the whole file
        ("bytes=9-0", None),  # an invalid range-spec: ignored
        ("bytes=-", None),
        ("bytes=a-b", None),
        ("items=0-9", None),
        ("bytes 0-9", None),
    ],
)
def test_parse_range(header: str | None, expected: ByteRange | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize(("header", "size"), [("bytes=1000-", 1000), ("bytes=1000-2000", 1000),
                                              ("bytes=-0", 1000), ("bytes=-10", 0),
                                              ("bytes=0-", 0)])
def test_unsatisfiable_ranges(header: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, size)


# -- over the app ------------------------------------------------------------------------


def test_the_whole_file(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        with_recording(api)
        response = await api.client.get(URL)

        assert response.status_code == 200
        assert response.content == DATA
        assert response.headers["content-type"] == "audio/wav"
        assert response.headers["content-length"] == "1000"
        assert response.headers["accept-ranges"] == "bytes"
        assert "content-range" not in response.headers

    run_api(tmp_path, scenario)


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [("bytes=0-99", 0, 99), ("bytes=100-", 100, 999), ("bytes=-50", 950, 999),
     ("bytes=900-5000", 900, 999)],
)
def test_a_range_is_206_with_its_bytes(tmp_path: Path, header: str, first: int,
                                       last: int) -> None:
    async def scenario(api: Api) -> None:
        with_recording(api)
        response = await api.client.get(URL, headers={"Range": header})

        assert response.status_code == 206
        assert response.content == DATA[first : last + 1]
        assert response.headers["content-range"] == f"bytes {first}-{last}/1000"
        assert response.headers["content-length"] == str(last - first + 1)

    run_api(tmp_path, scenario)


def test_an_unsatisfiable_range_is_416_with_the_size(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        with_recording(api)
        response = await api.client.get(URL, headers={"Range": "bytes=1000-"})

        assert response.status_code == 416
        assert response.headers["content-range"] == "bytes */1000"
        assert error_of(response) == "RANGE_NOT_SATISFIABLE"
        check_response(response, "/recordings/{filename}")

    run_api(tmp_path, scenario)


def test_several_ranges_get_the_whole_file(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        with_recording(api)
        response = await api.client.get(URL, headers={"Range": "bytes=0-9,20-29"})
        assert (response.status_code, response.content) == (200, DATA)

    run_api(tmp_path, scenario)


def test_if_range_resumes_only_the_same_file(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        path = with_recording(api)
        first = await api.client.get(URL)
        etag, modified = first.headers["etag"], first.headers["last-modified"]

        same = await api.client.get(URL, headers={"Range": "bytes=10-19", "If-Range": etag})
        by_date = await api.client.get(URL, headers={"Range": "bytes=10-19",
                                                     "If-Range": modified})
        path.write_bytes(DATA + b"more")  # the recording grew: another ETag
        changed = await api.client.get(URL, headers={"Range": "bytes=10-19", "If-Range": etag})

        assert (same.status_code, same.content) == (206, DATA[10:20])
        assert (by_date.status_code, by_date.content) == (206, DATA[10:20])
        assert (changed.status_code, changed.content) == (200, DATA + b"more")

    run_api(tmp_path, scenario)


def test_head_gives_the_headers_without_the_body(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        with_recording(api)
        whole = await api.client.head(URL)
        ranged = await api.client.head(URL, headers={"Range": "bytes=-50"})

        assert (whole.status_code, whole.content) == (200, b"")
        assert whole.headers["content-length"] == "1000"
        assert (ranged.status_code, ranged.content) == (206, b"")
        assert ranged.headers["content-range"] == "bytes 950-999/1000"

    run_api(tmp_path, scenario)


def test_a_file_larger_than_one_chunk_arrives_whole(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        big = os.urandom(600_000)
        with_recording(api, big)
        whole = await api.client.get(URL)
        tail = await api.client.get(URL, headers={"Range": "bytes=100000-"})

        assert whole.content == big
        assert tail.content == big[100_000:]

    run_api(tmp_path, scenario)


@pytest.mark.parametrize(
    "name",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "crm_x.wav",
        f"CRM_{CALL_ID}.wav",
        f"crm_{CALL_ID.upper()}.wav",
        f"crm_{CALL_ID}.WAV",
        f"crm_{CALL_ID}.wav.bak",
        f"crm_{uuid.uuid1()}.wav",  # not a UUID4: never one of ours
        f"crm_{CALL_ID}.wav%00",
        f"crm_{CALL_ID}.wav%0A",
        f"%2E%2E%2Fcrm_{CALL_ID}.wav",
    ],
)
def test_anything_but_an_exact_name_is_404(tmp_path: Path, name: str) -> None:
    async def scenario(api: Api) -> None:
        with_recording(api)
        (tmp_path / "passwd").write_text("root:x:0:0")
        response = await api.client.get(f"/recordings/{name}")

        assert response.status_code == 404
        assert error_of(response) in ("RECORDING_NOT_FOUND", "NOT_FOUND")
        assert b"root" not in response.content

    run_api(tmp_path, scenario)


def test_dot_dot_in_the_path_does_not_leave_the_directory(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        (tmp_path / "passwd").write_text("root:x:0:0")
        response = await api.client.get("/recordings/../passwd")
        assert response.status_code == 404
        assert b"root" not in response.content

    run_api(tmp_path, scenario)


def test_a_missing_recording_is_404_in_the_error_shape(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        response = await api.client.get(URL)

        assert response.status_code == 404
        assert error_of(response) == "RECORDING_NOT_FOUND"
        check_response(response, "/recordings/{filename}")

    run_api(tmp_path, scenario)


def test_a_symlink_with_a_valid_name_is_not_followed(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        secret = tmp_path / "secret.wav"
        secret.write_bytes(b"RIFF secret")
        (api.recordings / NAME).symlink_to(secret)
        response = await api.client.get(URL)

        assert response.status_code == 404
        assert b"secret" not in response.content

    run_api(tmp_path, scenario)


def test_a_directory_with_a_valid_name_is_404(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        (api.recordings / NAME).mkdir()
        response = await api.client.get(URL)
        assert response.status_code == 404

    run_api(tmp_path, scenario)


def test_no_file_descriptor_is_left_open(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        with_recording(api)
        before = len(os.listdir("/proc/self/fd"))
        for headers in ({}, {"Range": "bytes=0-9"}, {"Range": "bytes=5000-"}):
            await api.client.get(URL, headers=headers)
            await api.client.head(URL, headers=headers)
        directory = f"crm_{uuid.uuid4()}.wav"
        (api.recordings / directory).mkdir()
        assert (await api.client.get(f"/recordings/{directory}")).status_code == 404
        assert len(os.listdir("/proc/self/fd")) == before

    run_api(tmp_path, scenario)
