"""Every JSON body the API clients received from an operation of the OpenAPI table is exactly what that
operation's response model promises (the models are closed, so a field the document does not declare is a
failure), and every problem+json body is a ProblemDetails. Runs after every other test: it is marked
after_everything_else, which tests/conftest.py orders last.

The haystack is tests.support.RESPONSES (every response of every api_client of the session). So that the
check means something when this file runs alone, it first drives each main operation once itself."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from registrations.openapi import OPERATIONS, ProblemDetails
from registrations.problems import PROBLEM_CONTENT_TYPE
from tests.support import RESPONSES, path_regex

pytestmark = pytest.mark.after_everything_else

BASE_PATH = "/api"
# (operationId, status) pairs whose bodies must have been seen and checked.
MAIN = {("CreateRegistration", 201), ("CreateRegistration", 200), ("GetRegistration", 200),
        ("ListRegistrations", 200), ("DeleteRegistration", 200), ("RotateCredential", 201),
        ("RotateCredential", 200), ("ListCredentials", 200), ("GetExpiringReport", 200),
        ("VerifyRegistration", 200), ("VerifyRegistration", 202), ("GetCapacityReport", 200)}
_ROUTES = [(op.method.upper(), path_regex(BASE_PATH + op.path), op) for op in OPERATIONS.values()]
_ADAPTERS: dict[Any, TypeAdapter] = {}


def _model_for(method: str, path: str, status: int, content_type: str) -> tuple[str, Any] | None:
    """(operationId, the model its body must match), or None when the document promises no model for it (a
    free-form reply, text, or a route or status outside the table)."""
    for route_method, pattern, op in _ROUTES:
        if route_method == method and pattern.match(path):
            if content_type == PROBLEM_CONTENT_TYPE:
                return op.operation_id, ProblemDetails
            model = next((r.model for r in op.replies if r.status == status), None)
            return (op.operation_id, model) if model is not None and content_type == "application/json" else None
    return None


def _mismatch(model: Any, body: str) -> str | None:
    adapter = _ADAPTERS.setdefault(model, TypeAdapter(model))
    try:
        adapter.validate_json(body, strict=True)
    except ValidationError as exc:
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
    return None


def _drive_main_operations(api, tenant) -> None:
    """One of each main operation and answer, on registrations of every credential kind."""
    bodies = [
        {"type": "service", "name": "models-secret", "access": "reader"},
        {"type": "service", "name": "models-cert", "access": "writer", "credential": {"kind": "certificate"}},
        {"type": "service", "name": "models-fed", "access": "reader",
         "credential": {"kind": "federated", "issuer": tenant.federated_issuer, "subject": "system:models"}},
        {"type": "public", "name": "models-spa", "platform": "spa",
         "redirectUris": ["https://viewer.example.org/models"]},
        {"type": "confidential", "name": "models-web", "redirectUris": ["https://portal.example.org/models"]},
    ]
    for body in bodies:
        body.update(displayName=body["name"], dicomService="managed")
    for body in bodies[1:]:
        assert api.post("/registrations", json=body).status_code == 201
    tenant.set_faults({"replicationDelayMs": 3000})  # so that the first verification answers 202
    try:
        assert api.post("/registrations", json=bodies[0]).status_code == 201
        answers = [api.get("/registrations/models-secret/verification").status_code]
        deadline = time.monotonic() + 30
        while answers[-1] == 202 and time.monotonic() < deadline:
            time.sleep(0.5)
            answers.append(api.get("/registrations/models-secret/verification").status_code)
    finally:
        tenant.set_faults({})
    assert answers[0] == 202 and answers[-1] == 200, answers
    assert api.post("/registrations", json=bodies[0]).status_code == 200
    for name in ("models-cert", "models-spa", "models-web"):
        api.get(f"/registrations/{name}/verification")
    for body in bodies:
        api.get(f"/registrations/{body['name']}")
    api.get("/registrations", params={"top": 2})
    for name in ("models-secret", "models-cert"):
        rotate = lambda: api.post(f"/registrations/{name}/credentials",  # noqa: E731
                                  headers={"Idempotency-Key": "models-1"})
        assert rotate().status_code == 201 and rotate().status_code == 200  # rotated, then a replay
        api.get(f"/registrations/{name}/credentials")
    api.get("/reports/expiring", params={"days": 730})
    api.get("/reports/capacity")
    api.get("/registrations/no-such-registration")  # a problem
    for body in bodies:
        assert api.delete(f"/registrations/{body['name']}").status_code == 200


def test_every_body_matches_its_response_model(api, tenant):
    _drive_main_operations(api, tenant)
    checked: set[tuple[str, int]] = set()
    mismatches = []
    for method, path, status, content_type, body in list(RESPONSES):
        found = _model_for(method, path, status, content_type)
        if found is None:
            continue
        operation_id, model = found
        checked.add((operation_id, status))
        problem = _mismatch(model, body)
        if problem:
            mismatches.append(f"{method} {path} {status} ({model.__name__}): {problem}")
    assert not mismatches, "\n".join(mismatches[:20])
    assert MAIN <= checked, f"never seen: {sorted(MAIN - checked)}"
