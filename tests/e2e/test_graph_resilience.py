"""Graph answers the product recovers from as Entra gives them: a cached token Graph refuses, and a
duplicate app role assignment (400 Request_BadRequest, the same code as a principal Graph cannot see yet)."""

from __future__ import annotations

import time

from tests.support import api_client, api_token, create, service, settings_override


def test_a_graph_token_the_service_refuses_is_refreshed_once(host):
    """The tenant's clock moves two hours: Graph refuses the product's cached token as expired (401
    InvalidAuthenticationToken) while the product's cache still holds it. The call is repeated once with a
    fresh token, without a fresh runtime."""
    from localtenant import LocalTenant

    with LocalTenant.start() as other, settings_override(**other.app_settings()), \
            api_client(host, api_token(other, other.seed.admin_client)) as api:
        create(api, service("refused-token"))
        other.advance_clock(2 * 3600)
        before = other.stats()["calls"].get("identity.token", 0)
        response = api.get("/registrations/refused-token")
        assert response.status_code == 200, response.text
        assert other.stats()["calls"].get("identity.token", 0) > before  # a fresh token was fetched


def test_a_duplicate_app_role_assignment_is_found_not_waited_out(api, tenant):
    """The first appRoleAssignedTo is made but its answer is lost (503 after the commit), and the look for
    it finds nothing yet (404: not replicated). The repeat meets Graph's duplicate answer (400
    Request_BadRequest, "Permission being assigned already exists on the object", the same code as a
    principal Graph cannot see yet): the assignment is looked for again and found, not waited out as lag
    until the deadline and rolled back."""
    made = api.post("/registrations", json={"type": "resource", "name": "dicom-oss-api",
                                            "displayName": "DICOM OSS API", "dicomService": "oss"})
    assert made.status_code in (200, 201), made.text
    tenant.set_faults({"failures": [
        {"operation": "graph.createAppRoleAssignment", "nth": 1, "status": 503, "when": "after"},
        {"operation": "graph.listAppRoleAssignments", "nth": 1, "status": 404}]})
    try:
        started = time.monotonic()
        reg = create(api, service("dup-assignment", "oss", access="writer"))
        elapsed = time.monotonic() - started
        calls = tenant.stats()["calls"]
    finally:
        tenant.set_faults({})
    assert reg["state"] == "ready" and elapsed < 15, elapsed
    assert calls["graph.createAppRoleAssignment"] >= 2  # the lost one and the duplicate
    assignments = [a for a in tenant.state()["appRoleAssignments"] if a["principalId"] == reg["servicePrincipalId"]]
    assert len(assignments) == 1


CONCURRENCY = {"status": 409, "code": "Directory_ConcurrencyViolation"}


def test_a_concurrency_violation_is_retried_and_adds_one_credential(api, tenant):
    """addPassword refused with 409 Directory_ConcurrencyViolation (another credential write on the app was in
    flight) did nothing: it is repeated after a pause, and the registration ends with one password."""
    tenant.set_faults({"failures": [{"operation": "graph.addPassword", "nth": 1, **CONCURRENCY}]})
    try:
        reg = create(api, service("busy-app"))
        calls = tenant.stats()["calls"]
    finally:
        tenant.set_faults({})
    assert reg["state"] == "ready" and calls["graph.addPassword"] >= 2
    app = next(a for a in tenant.state()["applications"] if a.get("uniqueName") == "dicomreg-busy-app")
    assert len(app["passwordCredentials"]) == 1


def test_the_sweep_retries_a_concurrency_violation_when_it_removes_a_credential(api, tenant):
    """removePassword refused with the concurrency violation is repeated by the pipeline like throttling."""
    from datetime import datetime, timedelta, timezone

    from registrations import sweep as sweeper
    from registrations import wiring

    create(api, service("busy-retire"))
    rotated = api.post("/registrations/busy-retire/credentials", headers={"Idempotency-Key": "busy-retire-1"})
    assert rotated.status_code == 201, rotated.text
    superseded = next(c for c in rotated.json()["credentials"] if c["state"] == "superseded")
    later = datetime.fromisoformat(superseded["removeAfter"].replace("Z", "+00:00")) + timedelta(days=1)
    tenant.set_faults({"failures": [{"operation": "graph.removePassword", "nth": 1, **CONCURRENCY}]})
    try:
        report = sweeper.run(wiring.runtime().service, now=later.astimezone(timezone.utc))
    finally:
        tenant.set_faults({})
    assert [r["keyId"] for r in report["removed"] if r["registration"] == "busy-retire"] == [superseded["keyId"]]
    app = next(a for a in tenant.state()["applications"] if a.get("uniqueName") == "dicomreg-busy-retire")
    assert superseded["keyId"] not in {p["keyId"] for p in app["passwordCredentials"]}
