"""Retries converge on one registration; failures leave either a complete registration or nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.test_types import secret_client


def body(name: str, **extra) -> dict:
    return {"type": "service", "name": name, "displayName": "Idempotent", "dicomService": "managed",
            "access": "reader", **extra}


def objects_named(tenant, name: str) -> dict[str, list]:
    """Everything in the local tenant that belongs to registration `name`."""
    state = tenant.state()
    apps = [a for a in state["applications"] if a.get("uniqueName") == f"dicomreg-{name}"]
    app_ids = {a["appId"] for a in apps}
    sps = [s for s in state["servicePrincipals"] if s["appId"] in app_ids]
    sp_ids = {s["id"] for s in sps}
    secret_name = f"dicomreg--{name}--secret"
    return {
        "applications": apps,
        "servicePrincipals": sps,
        "passwords": [p for a in apps for p in a.get("passwordCredentials", [])],
        "roleAssignments": [r for r in state["roleAssignments"] if r["properties"]["principalId"] in sp_ids],
        "secretVersions": [v for s in state["secrets"] if s["name"] == secret_name and not s["deleted"]
                           for v in s["versions"]],
        "deletedSecrets": [s for s in state["secrets"] if s["name"] == secret_name and s["deleted"]],
    }


def assert_exactly_one(tenant, name: str) -> None:
    found = objects_named(tenant, name)
    counts = {kind: len(items) for kind, items in found.items()}
    assert counts == {"applications": 1, "servicePrincipals": 1, "passwords": 1, "roleAssignments": 1,
                      "secretVersions": 1, "deletedSecrets": 0}, counts


def test_same_create_ten_times_makes_one_of_everything(api, tenant):
    name = "idem-ten"
    with ThreadPoolExecutor(5) as pool:
        concurrent = list(pool.map(
            lambda i: api.post("/registrations", json=body(name), headers={"Idempotency-Key": "k-1"}), range(5)))
    sequential = [api.post("/registrations", json=body(name)) for _ in range(5)]
    statuses = sorted(r.status_code for r in concurrent + sequential)
    assert statuses == [200] * 9 + [201], statuses
    replayed = [r for r in concurrent + sequential if r.status_code == 200]
    assert all(r.headers["idempotent-replayed"] == "true" for r in replayed)
    assert len({r.json()["appId"] for r in concurrent + sequential}) == 1
    assert len({r.json()["credential"]["keyId"] for r in concurrent + sequential}) == 1
    assert_exactly_one(tenant, name)


def test_same_name_different_body_is_a_conflict_naming_the_fields(api, tenant):
    assert api.post("/registrations", json=body("idem-conflict")).status_code == 201
    response = api.post("/registrations", json=body("idem-conflict", access="admin", displayName="Other"))
    assert response.status_code == 409
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["type"].endswith(":conflict")
    assert set(problem["differingFields"]) == {"access", "displayName"}
    assert_exactly_one(tenant, "idem-conflict")


# Each remote call of a managed service-client create, failed once (a transient 503) or for good (a 403).
CREATE_STEPS = [
    "graph.getApplication", "graph.listServicePrincipals", "graph.upsertApplication",
    "graph.createServicePrincipal", "graph.addPassword", "keyvault.setSecret", "arm.createRoleAssignment",
    "graph.updateApplication",
]


@pytest.mark.parametrize("mode", ["once", "permanent"])
@pytest.mark.parametrize("operation", CREATE_STEPS)
def test_a_failing_step_leaves_a_complete_registration_or_nothing(api, tenant, operation, mode):
    name = f"fault-{mode}-{operation.split('.')[1].lower()}"[:40]
    failure = {"operation": operation, "nth": 1, "status": 503, "times": 1} if mode == "once" \
        else {"operation": operation, "nth": 1, "status": 403, "times": None}
    tenant.set_faults({"failures": [failure]})
    try:
        response = api.post("/registrations", json=body(name))
    finally:
        tenant.set_faults({})
    found = objects_named(tenant, name)
    if response.status_code == 201:
        assert response.json()["state"] == "ready"
        assert_exactly_one(tenant, name)
        assert secret_client(tenant).get_secret(f"dicomreg--{name}--secret").value
    else:
        assert response.headers["content-type"] == "application/problem+json", response.text
        assert response.status_code in (502, 503), response.text
        leftovers = {kind: items for kind, items in found.items() if items}
        assert leftovers == {}, leftovers
    if mode == "once":
        assert response.status_code == 201, response.text
