"""Retries converge on one registration; failures leave either a complete registration or nothing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import objects_named, secret_client


def body(name: str, **extra) -> dict:
    return {"type": "service", "name": name, "displayName": "Idempotent", "dicomService": "managed",
            "access": "reader", **extra}


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
    "graph.getApplication", "graph.listOwnedObjects", "graph.listServicePrincipals", "graph.createApplication",
    "graph.createServicePrincipal", "graph.addPassword", "keyvault.setSecret", "arm.createRoleAssignment",
    "graph.updateApplication",
]


FAILURES = {
    "once": {"status": 503, "times": 1},  # transient, nothing done
    "lost": {"status": 503, "times": 1, "when": "after"},  # done, but the answer is lost
    "permanent": {"status": 403, "times": None},
}


@pytest.mark.parametrize("mode", list(FAILURES))
@pytest.mark.parametrize("operation", CREATE_STEPS)
def test_a_failing_step_leaves_a_complete_registration_or_nothing(api, tenant, operation, mode):
    name = f"fault-{mode}-{operation.split('.')[1].lower()}"[:40]
    failure = {"operation": operation, "nth": 1, **FAILURES[mode]}
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
    if mode != "permanent":
        assert response.status_code == 201, response.text


def counts(tenant) -> dict[str, int]:
    state = tenant.state()
    return {kind: len(state[kind]) for kind in ("applications", "servicePrincipals", "appRoleAssignments",
                                                 "oauth2PermissionGrants", "roleAssignments", "secrets")}


def ensure_oss_resource(api) -> None:
    made = api.post("/registrations", json={"type": "resource", "name": "dicom-oss-api",
                                            "displayName": "DICOM OSS API", "dicomService": "oss"})
    assert made.status_code in (200, 201), made.text


# Other kinds of registration and the calls only they make: (body extras, operation).
OTHER_PATHS = {
    "confidential-consent": ({"type": "confidential", "redirectUris": ["https://portal.example.org/cb"]},
                             "graph.createOAuth2PermissionGrant"),
    "certificate": ({"credential": {"kind": "certificate"}}, "graph.updateApplication"),
    "federated": ({"credential": {"kind": "federated", "issuer": "https://issuer.local.test", "subject": "job"}},
                  "graph.createFederatedIdentityCredential"),
    "oss-app-role": ({"dicomService": "oss"}, "graph.createAppRoleAssignment"),
    "secret-reader": ({"secretReaders": ["ce939e95-fac6-5dd6-97f6-aa7e41606a70"]}, "arm.createRoleAssignment"),
}


@pytest.mark.parametrize("mode", list(FAILURES))
@pytest.mark.parametrize("path", list(OTHER_PATHS))
def test_other_paths_end_complete_or_empty(api, tenant, path, mode):
    ensure_oss_resource(api)
    extras, operation = OTHER_PATHS[path]
    name = f"path-{mode}-{path}"[:40]
    request = {**body(name), **extras}
    if request["type"] != "service":
        request.pop("access")
    before = counts(tenant)
    tenant.set_faults({"failures": [{"operation": operation, "nth": 1, **FAILURES[mode]}]})
    try:
        response = api.post("/registrations", json=request)
    finally:
        tenant.set_faults({})
    after = counts(tenant)
    if mode == "permanent":
        assert response.status_code in (502, 503), response.text
        assert after == before, (before, after)
        return
    assert response.status_code == 201, response.text
    assert after["applications"] == before["applications"] + 1
    assert after["servicePrincipals"] == before["servicePrincipals"] + 1
    app = next(a for a in tenant.state()["applications"] if a.get("uniqueName") == f"dicomreg-{name}")
    kind = request.get("credential", {}).get("kind", "secret")
    assert len(app["passwordCredentials"]) == (1 if kind == "secret" else 0)
    assert len(app["keyCredentials"]) == (1 if kind == "certificate" else 0)
    assert len(app["federatedIdentityCredentials"]) == (1 if kind == "federated" else 0)
    grants = {"confidential-consent": "oauth2PermissionGrants", "oss-app-role": "appRoleAssignments"}
    if path in grants:
        assert after[grants[path]] == before[grants[path]] + 1
    assert api.delete(f"/registrations/{name}").status_code == 200


@pytest.mark.parametrize("mode", ["lost", "once"])
def test_a_rotation_whose_answer_is_lost_rotates_once(api, tenant, mode):
    name = f"rotate-{mode}"
    assert api.post("/registrations", json=body(name)).status_code == 201
    tenant.set_faults({"failures": [{"operation": "graph.addPassword", "nth": 1, **FAILURES[mode]}]})
    try:
        rotated = api.post(f"/registrations/{name}/credentials", headers={"Idempotency-Key": "r-1"})
    finally:
        tenant.set_faults({})
    assert rotated.status_code == 201, rotated.text
    app = next(a for a in tenant.state()["applications"] if a.get("uniqueName") == f"dicomreg-{name}")
    assert len(app["passwordCredentials"]) == 2
    versions = [v for s in tenant.state()["secrets"] if s["name"] == f"dicomreg--{name}--secret"
                for v in s["versions"]]
    assert len(versions) == 2


def test_a_create_retried_with_the_same_idempotency_key_and_another_name_gets_the_first_answer(api, tenant):
    """A workflow that rebuilt its body between retries (a new generated name, say) must not make a second
    registration: the key's first answer is the answer (kept in the registry for 24 h)."""
    first = api.post("/registrations", json=body("idem-key-first"), headers={"Idempotency-Key": "wf-run-42"})
    assert first.status_code == 201, first.text
    again = api.post("/registrations", json=body("idem-key-second"), headers={"Idempotency-Key": "wf-run-42"})
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true", again.text
    assert again.json() == first.json()
    assert again.headers["location"].endswith("/registrations/idem-key-first")
    assert objects_named(tenant, "idem-key-second")["applications"] == []
    assert api.get("/registrations/idem-key-second").status_code == 404
    # Another key is another request.
    other = api.post("/registrations", json=body("idem-key-second"), headers={"Idempotency-Key": "wf-run-43"})
    assert other.status_code == 201, other.text
    for name in ("idem-key-first", "idem-key-second"):  # the session's object quota is shared
        assert api.delete(f"/registrations/{name}").status_code == 200
