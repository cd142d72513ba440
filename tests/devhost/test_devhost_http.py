"""The sample FunctionApp served for real over HTTP: routing, conversion both ways, errors."""

import json
import time

from devhost_sample import FUNCTION_KEY

KEY = {"x-functions-key": FUNCTION_KEY}


def test_anonymous_route_under_the_default_prefix(client):
    response = client.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert response.headers["content-type"] == "application/json"


def test_route_params_query_params_and_headers_reach_the_function(client):
    response = client.get(
        "/api/registrations/web-viewer",
        params={"type": "service", "top": "5"},
        headers={**KEY, "X-Test-Header": "hello"},
    )
    assert response.status_code == 200
    echoed = response.json()
    assert echoed["method"] == "GET"
    assert echoed["route"] == {"name": "web-viewer"}
    assert echoed["params"] == {"type": "service", "top": "5"}
    assert echoed["header"] == "hello"
    assert echoed["url"].endswith("/api/registrations/web-viewer?type=service&top=5")
    assert response.headers["x-echo"] == "yes"


IDENTITY = {"X-MS-CLIENT-PRINCIPAL": "eyJhdXRoX3R5cCI6ICJhYWQifQ==", "X-MS-CLIENT-PRINCIPAL-ID": "forged-oid",
            "X-MS-CLIENT-PRINCIPAL-NAME": "admin", "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
            "X-MS-TOKEN-AAD-ACCESS-TOKEN": "forged"}


def test_client_sent_easy_auth_headers_are_dropped_as_app_service_does(client, monkeypatch, caplog):
    """App Service: "External requests aren't allowed to set these headers"; the host drops them, unless a
    local Easy Auth is asked for (WEBSITE_AUTH_ENABLED=True: the caller stands in for the platform)."""
    monkeypatch.delenv("WEBSITE_AUTH_ENABLED", raising=False)
    echoed = client.get("/api/registrations/x", headers={**KEY, **IDENTITY, "X-Test-Header": "kept"}).json()
    assert echoed["identityHeaders"] == [] and echoed["header"] == "kept"
    assert any("suspicious" in r.getMessage() for r in caplog.records if r.name == "devhost")
    monkeypatch.setenv("WEBSITE_AUTH_ENABLED", "True")
    echoed = client.get("/api/registrations/x", headers={**KEY, **IDENTITY}).json()
    assert echoed["identityHeaders"] == sorted(h.lower() for h in IDENTITY)


def test_literal_route_wins_over_a_parameter(client):
    assert client.get("/api/registrations/export", headers=KEY).text == "export"


def test_body_and_status_come_back_unchanged(client):
    payload = bytes(range(256))
    response = client.post("/api/registrations", content=payload, headers=KEY)
    assert response.status_code == 201
    assert response.content == payload
    assert response.headers["content-type"] == "application/octet-stream"


def test_plain_string_return_is_text_with_charset(client):
    from devhost_sample import MASTER_KEY

    response = client.get("/api/admin-only", headers={"x-functions-key": MASTER_KEY})
    assert response.text == "admin"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


def test_constraints_and_optional_parameters(client):
    assert client.get("/api/items/7").json() == {"id": "7"}
    assert client.get("/api/items/7/abc").json() == {"id": "7", "label": "abc"}
    assert client.get("/api/items/seven").status_code == 404


def assert_problem(response, status):
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"]
    return body


def test_unknown_path_is_404_problem(client):
    assert_problem(client.get("/api/nowhere"), 404)
    assert_problem(client.get("/health"), 404)  # the prefix is required


def test_wrong_method_is_405_problem_with_allow(client):
    response = client.put("/api/registrations/web-viewer", headers=KEY)
    assert_problem(response, 405)
    assert response.headers["allow"] == "DELETE, GET"


def test_a_failing_function_is_500_without_its_exception_text(client, caplog):
    response = client.get("/api/boom")
    body = assert_problem(response, 500)
    assert "hunter2" not in response.text and "RuntimeError" not in response.text
    assert "boom" in body["detail"]
    assert any(record.exc_info and "hunter2" in str(record.exc_info[1]) for record in caplog.records)


def test_the_access_log_has_one_structured_line_per_request(client, caplog):
    """At DEBUG for a request a function answered (the function app logs its own line), at INFO for one the
    host refused itself."""
    caplog.set_level("DEBUG", logger="devhost.access")
    client.get("/api/registrations/x", params={"top": "1"}, headers=KEY)
    lines = access_lines(caplog, count=1)
    assert [r.levelname for r in caplog.records if r.name == "devhost.access"] == ["DEBUG"]
    assert lines == [
        {
            "event": "request",
            "method": "GET",
            "path": "/api/registrations/x",
            "status": 200,
            "durationMs": lines[0]["durationMs"],
            "function": "get_registration",
        }
    ]
    caplog.clear()
    client.get("/api/registrations/x")  # no key: the host answers 401 itself
    [refused] = access_lines(caplog, count=1)
    assert refused["status"] == 401 and refused["function"] is None
    assert [r.levelname for r in caplog.records if r.name == "devhost.access"] == ["INFO"]


def access_lines(caplog, count):
    """The server thread logs after the response is sent, so the line may trail the client by a moment."""
    deadline = time.monotonic() + 2
    while True:
        lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "devhost.access"]
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.01)
