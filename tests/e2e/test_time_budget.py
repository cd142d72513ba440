"""One time budget per request: a step that Azure throttles for longer than the budget has left gives up at
once, undoes what was made, and tells the caller to come back when Azure said (not a fixed guess)."""

from __future__ import annotations

import json
import time

from tests.support import settings_override


def body(name: str) -> dict:
    return {"type": "service", "name": name, "displayName": "Budget", "dicomService": "managed",
            "access": "reader"}


def throttled_create(api, tenant, name: str, faults: dict):
    """A create with a 10 s budget while Graph throttles as `faults` say, telling the caller to wait 20 s:
    more than the budget holds."""
    with settings_override(PROVISIONING_DEADLINE_SECONDS="10"):
        tenant.set_faults(faults)
        try:
            started = time.monotonic()
            response = api.post("/registrations", json=body(name))
            return response, time.monotonic() - started
        finally:
            tenant.set_faults({})


def test_a_throttled_step_that_outlasts_the_budget_answers_503_with_azures_retry_after(api, tenant):
    # The create of the application (a write the transport does not retry) is the call Graph throttles: named,
    # so the reads the create makes beside it, in whatever order they arrive, are not.
    throttled = {"failures": [{"operation": "graph.createApplication", "nth": 1, "status": 429, "retryAfter": 20}]}
    response, took = throttled_create(api, tenant, "budget-throttled", throttled)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["failedStep"] == "create application"
    assert problem["upstream"] == {"service": "graph", "operation": "createApplication", "status": 429,
                                   "code": problem["upstream"]["code"]}
    assert 19 <= int(response.headers["Retry-After"]) <= 20, response.headers["Retry-After"]
    assert took < 8, f"gave up after {took:.1f} s instead of at once (the budget is 10 s)"
    assert not [a for a in tenant.state()["applications"] if a.get("uniqueName") == "dicomreg-budget-throttled"]
    # When Azure lets it through, the same request makes the registration.
    assert api.post("/registrations", json=body("budget-throttled")).status_code == 201
    assert api.delete("/registrations/budget-throttled").status_code == 200


def test_a_throttled_read_that_outlasts_the_budget_is_not_retried_past_it(api, tenant):
    # The reads that start every create are retried by the transport's policy, which would sleep the whole
    # Retry-After (20 s) before looking at its timeout: the budget (10 s) stops it first. The object quota's
    # read of what the identity owns is the one the create waits for first. An empty bucket from the start:
    # Graph lets one call through every 20 s, so every read is told to wait 20 s.
    response, took = throttled_create(api, tenant, "budget-throttled-read",
                                      {"throttle": {"ratePerSecond": 0.05, "burst": 0, "services": ["graph"]}})
    assert response.status_code == 503, response.text
    assert response.json()["upstream"]["operation"] == "listOwnedObjects"
    assert 19 <= int(response.headers["Retry-After"]) <= 20, response.headers["Retry-After"]
    assert took < 8, f"waited {took:.1f} s (the budget is 10 s)"


def test_replication_lag_is_waited_out_through_the_one_sleeping_seam(call, admin_token, tenant):
    """A direct call (the test's own thread, so its context reaches the saga's worker threads): Graph does not
    know the new application for two tries; the create waits (through saga.sleeping, so no real time) and
    makes one service principal."""
    from registrations import http, saga

    waits: list[float] = []
    tenant.set_faults({"failures": [{"operation": "graph.createServicePrincipal", "nth": 1, "status": 404,
                                     "times": 2}]})
    try:
        with saga.sleeping(waits.append):
            response = call(http.create_registration, token=admin_token, json_body=body("budget-lag"))
    finally:
        tenant.set_faults({})
    assert response.status_code == 201, response.get_body()
    assert len(waits) == 2 and 0.2 <= waits[0] <= 0.3 and 0.4 <= waits[1] <= 0.6, waits
    app_id = json.loads(response.get_body())["appId"]
    assert len([s for s in tenant.state()["servicePrincipals"] if s["appId"] == app_id]) == 1
    assert call(http.delete_registration, "budget-lag", token=admin_token).status_code == 200
