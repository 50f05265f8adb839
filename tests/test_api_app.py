"""The app as a whole: health, the served spec, errors for unknown routes and methods and for
failures inside, and the same endpoints over real HTTP on 127.0.0.1 (uvicorn)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from api_support import (
    BODY,
    Api,
    check_response,
    error_of,
    run_api,
    serve_http,
)
from callbridge.api.routes import openapi_text
from callbridge.store.models import Call

SPEC = Path("/work/shared/spec/click-to-call.openapi.yaml")

# -- /health -------------------------------------------------------------------------------


def test_health_is_200_with_the_checks_when_all_pass(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        api.checks = {"database": True, "sip": True, "rtp": True, "trunk": True}
        response = await api.client.get("/health")

        assert response.status_code == 200
        assert check_response(response, "/health") == {"status": "success",
                                                         "checks": api.checks}

    run_api(tmp_path, scenario)


def test_health_is_503_naming_the_failing_checks(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        api.checks = {"database": False, "sip": True, "trunk": False}
        response = await api.client.get("/health")

        assert response.status_code == 503
        body = check_response(response, "/health")
        assert error_of(response) == "UNHEALTHY"
        assert body["message"] == "unhealthy; failing: database, trunk"
        assert body["checks"] == api.checks

    run_api(tmp_path, scenario)


def test_health_checks_that_raise_are_503(tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(api: Api) -> None:
        api.health_error = RuntimeError("the probe itself failed")
        response = await api.client.get("/health")

        assert response.status_code == 503
        assert error_of(response) == "UNHEALTHY"
        assert "the probe itself failed" not in response.text

    with caplog.at_level(logging.ERROR):
        run_api(tmp_path, scenario)
    assert "health checks failed to run" in caplog.text


# -- the served spec -------------------------------------------------------------------------


def test_openapi_is_served_with_our_server_and_every_route(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        response = await api.client.get("/openapi.yaml")

        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/yaml")
        document = yaml.safe_load(response.text)
        assert document["servers"][0]["url"] == api.ctx.settings.http.public_url
        assert set(document["paths"]) == {
            "/calls", "/calls/{call_id}", "/calls/{call_id}/add-leg", "/calls/{call_id}/hangup",
            "/calls/{call_id}/dtmf", "/health", "/recordings/{filename}", "/openapi.yaml"}

    run_api(tmp_path, scenario)


def test_the_spec_keeps_every_spec_field_and_documents_our_additions() -> None:
    schemas = yaml.safe_load(openapi_text())["components"]["schemas"]
    call = schemas["CallStatusResponse"]["properties"]
    leg = call["legs"]["items"]["properties"]
    assert set(schemas["InitiateCallRequest"]["properties"]) == {
        "from_number", "to_number", "crm_username", "agent_number", "uuid", "recording",
        "max_ring_time", "agent_confirm", "time_limit"}
    assert set(call) == {"status", "call_id", "uuid", "call_status", "duration",
                         "recording_url", "start_time", "end_time", "legs", "hangup_source",
                         "agent_confirm", "time_limit"}
    assert set(leg) == {"role", "number", "status",
                        "leg_id", "sip_code", "reason", "answered_at", "ended_at"}
    assert set(schemas["ErrorResponse"]["properties"]) == {"status", "error_code", "message"}


def extends(ours: Any, theirs: Any, where: str = "") -> list[str]:
    """Where ``ours`` departs from ``theirs`` other than by additions: every key of theirs
    kept, every value equal, a text kept as the start of ours."""
    if isinstance(theirs, dict):
        if not isinstance(ours, dict):
            return [where]
        return [problem for key, value in theirs.items()
                for problem in (extends(ours[key], value, f"{where}/{key}") if key in ours
                                else [f"{where}/{key} missing"])]
    if isinstance(theirs, str) and isinstance(ours, str):
        return [] if ours.startswith(theirs.rstrip("\n")) else [where]
    return [] if ours == theirs else [where]


def test_add_leg_is_the_spec_s_own_plus_additions() -> None:
    theirs = yaml.safe_load(SPEC.read_text())["paths"]["/calls/{call_id}/add-leg"]
    ours = yaml.safe_load(openapi_text())["paths"]["/calls/{call_id}/add-leg"]
    assert extends(ours, theirs) == []
    # The check itself finds a change.
    changed = {**ours, "post": {**ours["post"], "operationId": "addLeg"}}
    assert extends(changed, theirs) == ["/post/operationId"]


# -- errors around the routes ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/nothing", "/calls/", "/calls/x/transfer", "/recordings/"])
def test_unknown_routes_are_404_in_the_error_shape(tmp_path: Path, path: str) -> None:
    async def scenario(api: Api) -> None:
        response = await api.client.post(path, headers=api.auth, json=BODY)
        assert response.status_code == 404
        assert error_of(response) == "NOT_FOUND"

    run_api(tmp_path, scenario)


@pytest.mark.parametrize(("method", "path"), [("GET", "/calls"), ("DELETE", "/calls/x"),
                                              ("POST", "/health"), ("PUT", "/openapi.yaml"),
                                              ("GET", "/calls/x/hangup"),
                                              ("GET", "/calls/x/add-leg")])
def test_a_wrong_method_is_405_with_allow(tmp_path: Path, method: str, path: str) -> None:
    async def scenario(api: Api) -> None:
        response = await api.client.request(method, path, headers=api.auth)
        assert response.status_code == 405
        assert error_of(response) == "METHOD_NOT_ALLOWED"
        assert "allow" in response.headers

    run_api(tmp_path, scenario)


def test_an_unexpected_exception_is_500_without_its_details(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(api: Api) -> None:
        async def explode(call: Call) -> None:
            raise RuntimeError("password=hunter2 in a traceback")

        api.calls.start = explode  # type: ignore[method-assign]
        response = await api.post_call()

        assert response.status_code == 500
        assert response.json() == {"status": "error", "error_code": "INTERNAL_ERROR",
                                   "message": "internal error"}

    with caplog.at_level(logging.ERROR):
        run_api(tmp_path, scenario)
    assert "hunter2" in caplog.text  # in the log, for the operator; not in the answer


def test_a_database_failure_is_503_storage_unavailable(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(api: Api) -> None:
        await api.store.close()
        response = await api.post_call()

        assert response.status_code == 503
        assert error_of(response) == "STORAGE_UNAVAILABLE"
        check_response(response, "/calls")

    with caplog.at_level(logging.ERROR):
        run_api(tmp_path, scenario)


# -- over real HTTP ------------------------------------------------------------------------


def test_end_to_end_over_http(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        name = "crm_5deb67aa-d54d-4536-9a25-a29813b3bddd.wav"
        (api.recordings / name).write_bytes(bytes(range(256)) * 8)
        async with serve_http(api) as url, httpx.AsyncClient(base_url=url) as http:
            placed = await http.post("/calls", json=BODY, headers=api.auth)
            replayed = await http.post("/calls", json=BODY, headers=api.auth)
            call_id = placed.json()["call_id"]
            status = await http.get(f"/calls/{call_id}", headers=api.auth)
            health = await http.get("/health")
            part = await http.get(f"/recordings/{name}", headers={"Range": "bytes=-16"})
            head = await http.head(f"/recordings/{name}")
            missing = await http.get("/nothing")
            raw = await http.post("/calls", content=b"{", headers=api.auth)

        assert placed.status_code == 200
        check_response(placed, "/calls")
        assert replayed.headers["idempotent-replayed"] == "true"
        assert replayed.json()["call_id"] == call_id
        assert [c.call_id for c in api.calls.started] == [call_id]
        assert check_response(status, "/calls/{call_id}")["call_status"] == "INITIATED"
        assert health.json()["status"] == "success"
        assert (part.status_code, part.content) == (206, bytes(range(240, 256)))
        assert part.headers["content-range"] == "bytes 2032-2047/2048"
        assert (head.status_code, head.headers["content-length"], head.content) == (
            200, "2048", b"")
        assert (missing.status_code, error_of(missing)) == (404, "NOT_FOUND")
        assert (raw.status_code, error_of(raw)) == (400, "INVALID_JSON")

    run_api(tmp_path, scenario)


def test_a_large_body_over_http_is_413_without_reading_it_all(tmp_path: Path) -> None:
    async def scenario(api: Api) -> None:
        async with serve_http(api) as url, httpx.AsyncClient(base_url=url) as http:
            declared = await http.post("/calls", content=b"x" * 100_000, headers=api.auth)

            async def chunks() -> Any:
                for _ in range(100):
                    yield b"x" * 1024

            streamed = await http.post("/calls", content=chunks(), headers=api.auth)

        for response in (declared, streamed):
            assert response.status_code == 413
            assert error_of(response) == "PAYLOAD_TOO_LARGE"
        assert api.calls.started == []

    run_api(tmp_path, scenario)
