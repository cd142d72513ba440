"""Bad input gets a 4xx problem+json that says what is wrong, and nothing is created."""

from __future__ import annotations

import json

import pytest

from tests.support import api_client


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["type"].startswith("urn:dicom-registrations:problem:")
    assert body["title"] and body["detail"]
    return body


BASE = {"name": "valid-name", "displayName": "Valid", "dicomService": "managed"}


@pytest.mark.parametrize("body,where", [
    ({**BASE, "type": "service"}, ["service", "access"]),
    ({**BASE, "type": "service", "access": "root"}, ["service", "access"]),
    ({**BASE, "type": "service", "access": "reader", "extra": 1}, ["service", "extra"]),
    ({**BASE, "type": "public", "redirectUris": ["https://a.example.org/"], "credential": {"kind": "secret"}},
     ["public"]),
    ({**BASE, "type": "confidential", "redirectUris": ["https://*.example.org/cb"]},
     ["confidential", "redirectUris"]),
    ({**BASE, "type": "confidential", "redirectUris": ["http://app.example.org/cb"]},
     ["confidential", "redirectUris"]),
    ({**BASE, "type": "confidential", "redirectUris": ["https://app.example.org/cb#frag"]},
     ["confidential", "redirectUris"]),
    ({**BASE, "type": "confidential", "redirectUris": [f"https://app.example.org/{i}" for i in range(21)]},
     ["confidential", "redirectUris"]),
    ({**BASE, "type": "public", "platform": "spa", "redirectUris": ["javascript://alert(1)"]}, ["public"]),
    ({**BASE, "type": "service", "access": "reader", "name": "Bad_Name"}, ["service", "name"]),
    ({**BASE, "type": "service", "access": "reader", "name": "dicom--x"}, ["service", "name"]),
    ({**BASE, "type": "service", "access": "reader", "credential": {"kind": "secret", "lifetimeDays": 0}},
     ["service", "credential", "secret", "lifetimeDays"]),
    ({**BASE, "type": "nonsense"}, []),
])
def test_invalid_bodies_are_422_with_locations(api, tenant, body, where):
    before = len(tenant.state()["applications"])
    detail = problem(api.post("/registrations", json=body), 422)
    if where:
        assert any(err["loc"][: len(where)] == where for err in detail["errors"]), detail["errors"]
    assert len(tenant.state()["applications"]) == before


def test_unknown_target_and_wrong_target_kind(api):
    detail = problem(api.post("/registrations", json={**BASE, "type": "service", "access": "reader",
                                                      "dicomService": "nowhere"}), 422)
    assert "managed" in detail["detail"] and "oss" in detail["detail"]
    detail = problem(api.post("/registrations", json={**BASE, "type": "resource"}), 422)
    assert "open-source" in detail["detail"]


def test_malformed_and_oversized_bodies(api):
    problem(api.post("/registrations", content=b"{not json", headers={"content-type": "application/json"}), 400)
    deep = "[" * 100_000 + "]" * 100_000
    problem(api.post("/registrations", content=deep[:60_000].encode(),
                     headers={"content-type": "application/json"}), 400)
    huge = json.dumps({**BASE, "type": "service", "access": "reader", "notes": "x" * 70_000})
    problem(api.post("/registrations", content=huge.encode(), headers={"content-type": "application/json"}), 413)


def test_missing_and_bad_tokens_are_401_with_a_challenge(host):
    with api_client(host, None) as anonymous:
        response = anonymous.get("/registrations")
        problem(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
    with api_client(host, "not.a.token") as forged:
        problem(forged.get("/registrations"), 401)


def test_unknown_registration_is_404(api):
    problem(api.get("/registrations/does-not-exist"), 404)
    problem(api.get("/registrations/NOT_A_NAME"), 404)
    problem(api.delete("/registrations/does-not-exist"), 404)


def test_health_needs_no_key_or_token(host):
    import httpx

    response = httpx.get(f"{host.url}/api/health", trust_env=False)
    assert response.status_code == 200 and response.json()["status"] == "ok"
