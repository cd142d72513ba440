"""One time budget per request: a step that Azure throttles for longer than the budget has left gives up at
once, undoes what was made, and tells the caller to come back when Azure said (not a fixed guess)."""

from __future__ import annotations

import time

from tests.support import settings_override


def body(name: str) -> dict:
    return {"type": "service", "name": name, "displayName": "Budget", "dicomService": "managed",
            "access": "reader"}


def test_a_throttled_step_that_outlasts_the_budget_answers_503_with_azures_retry_after(api, tenant):
    # One Graph call per 20 s: the create's first read takes the only token, its upsert is told to wait 20 s,
    # more than the 10 s budget holds.
    with settings_override(PROVISIONING_DEADLINE_SECONDS="10"):
        tenant.set_faults({"throttle": {"ratePerSecond": 0.05, "burst": 1, "services": ["graph"]}})
        try:
            started = time.monotonic()
            response = api.post("/registrations", json=body("budget-throttled"))
            took = time.monotonic() - started
        finally:
            tenant.set_faults({})
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["failedStep"] == "create application"
    assert problem["upstream"] == {"service": "graph", "operation": "upsertApplication", "status": 429,
                                   "code": problem["upstream"]["code"]}
    assert 19 <= int(response.headers["Retry-After"]) <= 20, response.headers["Retry-After"]
    assert took < 5, f"gave up after {took:.1f} s instead of at once"
    assert not [a for a in tenant.state()["applications"] if a.get("uniqueName") == "dicomreg-budget-throttled"]
    # When Azure lets it through, the same request makes the registration.
    assert api.post("/registrations", json=body("budget-throttled")).status_code == 201
    assert api.delete("/registrations/budget-throttled").status_code == 200
