"""Changing a registration in place (PUT, PATCH): the client id and secret stay, and what changes works
through msal, Key Vault and Azure RBAC as they are; ETag and If-Match; drift and its repair; rollback."""

from __future__ import annotations

import json
import logging
import threading
import uuid

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from tests.support import (
    MANAGED_AUDIENCE, ca_context, claims, confidential_app, create, follow_authorize, secret_client, settings_override,
)

MERGE_PATCH = {"Content-Type": "application/merge-patch+json"}
READER, OWNER = "e89c7a3c-2f64-4fa1-a847-3e4c9ba4283a", "58a3b984-7adf-4c20-983a-32417c86fbc8"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"


@pytest.fixture(autouse=True)
def leave_nothing_behind(api):
    """Every registration a test here made is deleted afterwards, so the session's other suites (a list's
    first page among them) see what they made themselves."""
    yield
    url, params = "/registrations", {"top": "100"}
    names = []
    while url:
        page = api.get(url, params=params).json()
        names += [r["name"] for r in page["value"] if r["name"].startswith(("chg-", "own-"))]
        url, params = page.get("nextLink"), None
    for name in names:
        assert api.delete(f"/registrations/{name}").status_code == 200


def patch(api, name: str, body: dict, **headers: str) -> httpx.Response:
    return api.patch(f"/registrations/{name}", content=json.dumps(body), headers={**MERGE_PATCH, **headers})


def service(name: str, **extra) -> dict:
    return {"type": "service", "name": name, "displayName": f"Service {name}", "dicomService": "managed",
            "access": "reader", **extra}


def dicom_roles(tenant, sp_id: str) -> list[str]:
    return sorted(a["properties"]["roleDefinitionId"].rsplit("/", 1)[-1] for a in tenant.state()["roleAssignments"]
                  if a["properties"]["principalId"] == sp_id and a["properties"]["roleDefinitionId"].rsplit("/", 1)[-1]
                  in (READER, OWNER))


def readers_of(tenant, secret_name: str) -> list[str]:
    return sorted(a["properties"]["principalId"] for a in tenant.state()["roleAssignments"]
                  if a["properties"]["scope"].endswith(f"/secrets/{secret_name}")
                  and a["properties"]["roleDefinitionId"].endswith(SECRETS_USER))


def token_for(tenant, reg: dict) -> dict:
    config = reg["config"]
    secret = secret_client(tenant).get_secret(config["clientSecret"]["keyVaultSecretName"]).value
    return confidential_app(tenant, config["clientId"], secret).acquire_token_for_client(config["scopes"])


# --------------------------------------------------------------------------------------------- PATCH
def test_a_new_redirect_uri_keeps_client_id_and_secret_and_only_the_new_one_signs_in(api, tenant, caplog):
    old, new = "https://viewer.example.org/signin-oidc", "https://viewer-next.example.org/signin-oidc"
    reg = create(api, {"type": "confidential", "name": "chg-portal", "displayName": "Portal",
                       "dicomService": "managed", "redirectUris": [old],
                       "signInGroups": [tenant.seed.group.object_id]})
    secret_name = reg["config"]["clientSecret"]["keyVaultSecretName"]
    secret_before = secret_client(tenant).get_secret(secret_name)
    got = api.get("/registrations/chg-portal", params={"drift": "live"})
    etag = got.headers["etag"]
    assert etag == got.json()["etag"] == reg["etag"] and got.json()["drift"] == []

    with caplog.at_level(logging.INFO, logger="registrations.audit"):
        caplog.clear()
        changed = patch(api, "chg-portal", {"redirectUris": [new]}, **{"If-Match": etag})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["changed"] == ["redirectUris"] and body["redirectUris"] == [new]
    assert body["appId"] == reg["appId"] and body["credential"]["keyId"] == reg["credential"]["keyId"]
    assert changed.headers["etag"] == body["etag"] != etag
    [record] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "registrations.audit"]
    assert (record["event"], record["outcome"], record["changedFields"]) == (
        "registration.change", "succeeded", ["redirectUris"])
    secret_after = secret_client(tenant).get_secret(secret_name)
    assert (secret_after.value, secret_after.properties.version) == (secret_before.value,
                                                                      secret_before.properties.version)

    app = confidential_app(tenant, reg["appId"], secret_after.value)
    flow = app.initiate_auth_code_flow(body["config"]["scopes"], redirect_uri=new)
    result = app.acquire_token_by_auth_code_flow(flow, follow_authorize(tenant, flow["auth_uri"]))
    assert "access_token" in result, result
    assert claims(result["access_token"])["aud"] == MANAGED_AUDIENCE
    stale = app.initiate_auth_code_flow(body["config"]["scopes"], redirect_uri=old)
    with httpx.Client(verify=ca_context(tenant.ca_file), trust_env=False) as browser:
        refused = browser.get(stale["auth_uri"], follow_redirects=False)
    assert refused.status_code == 400 and "AADSTS50011" in refused.text

    # The ETag read before the change is stale now: a second editor holding it is refused, nothing changes.
    again = patch(api, "chg-portal", {"redirectUris": [old]}, **{"If-Match": etag})
    assert again.status_code == 412 and again.json()["type"].endswith(":precondition-failed")
    assert api.get("/registrations/chg-portal").json()["redirectUris"] == [new]
    assert api.delete("/registrations/chg-portal", headers={"If-Match": etag}).status_code == 412
    # The same patch again changes nothing: a replay.
    replay = patch(api, "chg-portal", {"redirectUris": [new]}, **{"If-Match": body["etag"]})
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["changed"] == [] and replay.headers["etag"] == body["etag"]


def test_patch_needs_a_merge_patch_and_refuses_fixed_fields(api):
    create(api, service("chg-fixed"))
    wrong_type = api.patch("/registrations/chg-fixed", json={"access": "writer"})
    assert wrong_type.status_code == 415 and wrong_type.headers["accept-patch"] == "application/merge-patch+json"
    for field, value in (("type", "confidential"), ("dicomService", "oss"), ("name", "chg-other")):
        refused = patch(api, "chg-fixed", {field: value})
        assert refused.status_code == 409, refused.text
        assert refused.json()["fixedFields"] == [field] and "create" in refused.json()["detail"]
    invalid = patch(api, "chg-fixed", {"access": "superuser"})
    assert invalid.status_code == 422 and invalid.json()["errors"][0]["loc"][-1] == "access"
    assert patch(api, "chg-fixed", {"notes": "CHG-42"}).json()["notes"] == "CHG-42"
    assert patch(api, "chg-fixed", {"notes": None}).json()["notes"] is None  # RFC 7396: null removes


def test_a_service_client_moved_from_reader_to_writer_keeps_a_working_token_throughout(api, tenant):
    reg = create(api, service("chg-router"))
    assert dicom_roles(tenant, reg["servicePrincipalId"]) == [READER]
    results: list[dict] = []
    stop = threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            results.append(token_for(tenant, reg))

    asker = threading.Thread(target=keep_asking)
    asker.start()
    try:
        changed = patch(api, "chg-router", {"access": "writer"})
    finally:
        stop.set()
        asker.join()
    assert changed.status_code == 200, changed.text
    assert changed.json()["changed"] == ["access"] and changed.json()["access"] == "writer"
    assert dicom_roles(tenant, reg["servicePrincipalId"]) == [OWNER]
    assert results and all("access_token" in r for r in results)
    assert "access_token" in token_for(tenant, reg)
    lowered = patch(api, "chg-router", {"access": "reader"})
    assert lowered.status_code == 200 and dicom_roles(tenant, reg["servicePrincipalId"]) == [READER]


def test_an_open_source_client_moved_to_writer_holds_exactly_the_writer_app_role(api, tenant):
    made = api.post("/registrations", json={"type": "resource", "name": "dicom-oss-api",
                                            "displayName": "DICOM OSS API", "dicomService": "oss"})
    assert made.status_code in (200, 201), made.text
    reg = create(api, service("chg-oss-job", dicomService="oss"))
    assert claims(token_for(tenant, reg)["access_token"])["roles"] == ["globalReader"]
    changed = patch(api, "chg-oss-job", {"access": "writer"})
    assert changed.status_code == 200, changed.text
    assert claims(token_for(tenant, reg)["access_token"])["roles"] == ["globalWriter"]
    held = [a for a in tenant.state()["appRoleAssignments"] if a["principalId"] == reg["servicePrincipalId"]]
    assert len(held) == 1


def test_secret_readers_added_and_removed_change_who_can_read_the_secret(api, tenant):
    reader = tenant.seed.reader_client
    reg = create(api, service("chg-shared"))
    name = reg["credential"]["keyVaultSecretName"]
    as_reader = SecretClient(
        tenant.vault_url,
        ClientSecretCredential(tenant.tenant_id, reader.app_id, reader.secret, authority=tenant.authority_host,
                               disable_instance_discovery=True, connection_verify=tenant.ca_file),
        verify_challenge_resource=False, connection_verify=tenant.ca_file)
    with pytest.raises(HttpResponseError) as denied:
        as_reader.get_secret(name)
    assert denied.value.status_code == 403

    added = patch(api, "chg-shared", {"secretReaders": [reader.object_id]})
    assert added.status_code == 200 and added.json()["secretReaders"] == [reader.object_id]
    assert as_reader.get_secret(name).value
    removed = patch(api, "chg-shared", {"secretReaders": []})
    assert removed.status_code == 200 and removed.json()["changed"] == ["secretReaders"]
    assert readers_of(tenant, name) == []
    with pytest.raises(HttpResponseError) as denied_again:
        as_reader.get_secret(name)
    assert denied_again.value.status_code == 403


def test_a_requester_changes_only_its_own_and_only_within_the_policy(as_, tenant):
    mine = as_["requester"].post("/registrations", json=service("chg-mine"))
    assert mine.status_code == 201, mine.text
    assert patch(as_["requester_b"], "chg-mine", {"displayName": "Taken"}).status_code == 404
    assert as_["requester_b"].put("/registrations/chg-mine", json=service("chg-mine")).status_code in (404, 409)
    assert as_["requester_b"].delete("/registrations/chg-mine").status_code == 404
    with settings_override(REQUESTER_ACCESS=json.dumps({"managed": ["reader"]})):
        refused = patch(as_["requester"], "chg-mine", {"access": "admin"})
    assert refused.status_code == 403 and refused.json()["allowedAccess"] == ["reader"]
    assert dicom_roles(tenant, mine.json()["servicePrincipalId"]) == [READER]


def test_owners_are_refused_clearly_where_the_deployment_cannot_add_them(api):
    refused = api.post("/registrations", json=service("own-off", owners=["00000000-0000-0000-0000-000000000001"]))
    assert refused.status_code == 422 and "MANAGE_OWNERS" in refused.json()["detail"]
    create(api, service("own-off"))
    patched = patch(api, "own-off", {"owners": ["00000000-0000-0000-0000-000000000001"]})
    assert patched.status_code == 422 and "MANAGE_OWNERS" in patched.json()["detail"]


# ----------------------------------------------------------------------------------------------- PUT
def test_put_creates_converges_and_replays(api, tenant):
    absent = api.put("/registrations/chg-put", json=service("chg-put"))
    assert absent.status_code == 201, absent.text
    assert absent.headers["etag"] == absent.json()["etag"]
    same = api.put("/registrations/chg-put", json=service("chg-put"))
    assert same.status_code == 200 and same.headers["idempotent-replayed"] == "true"
    assert same.json()["changed"] == []
    changed = api.put("/registrations/chg-put", json=service("chg-put", displayName="Renamed", autoRotate=True),
                      headers={"If-Match": same.headers["etag"]})
    assert changed.status_code == 200, changed.text
    assert sorted(changed.json()["changed"]) == ["autoRotate", "displayName"]
    assert changed.json()["appId"] == absent.json()["appId"] and changed.json()["autoRotate"] is True
    assert api.put("/registrations/chg-put-absent", json=service("chg-put-absent"),
                   headers={"If-Match": "*"}).status_code == 412
    assert api.put("/registrations/chg-put", json=service("chg-other")).status_code == 409


def test_a_role_assignment_removed_behind_the_apis_back_is_drift_and_put_repairs_it(api, tenant):
    reg = create(api, service("chg-drift"))
    [assignment] = [a for a in tenant.state()["roleAssignments"]
                    if a["properties"]["principalId"] == reg["servicePrincipalId"]]
    gone = arm(tenant, "DELETE", assignment["id"])  # behind the API's back
    assert gone.status_code == 200, gone.text
    drift = api.get("/registrations/chg-drift", params={"drift": "live"}).json()["drift"]
    assert drift == [{"field": "access", "expected": ["DICOM Data Reader"], "actual": []}]
    repaired = api.put("/registrations/chg-drift", json=service("chg-drift"))
    assert repaired.status_code == 200 and repaired.json()["changed"] == ["access"]
    assert dicom_roles(tenant, reg["servicePrincipalId"]) == [READER]
    assert api.get("/registrations/chg-drift", params={"drift": "live"}).json()["drift"] == []


def arm(tenant, method: str, path: str, **kwargs) -> httpx.Response:
    """ARM as an operator with RBAC rights (the API's identity) calls it: behind the API's back."""
    token = ManagedIdentityCredential().get_token("https://management.azure.com/.default").token
    with httpx.Client(verify=ca_context(tenant.ca_file), trust_env=False) as client:
        return client.request(method, f"{tenant.arm_endpoint}{path}", params={"api-version": "2022-04-01"},
                              headers={"Authorization": f"Bearer {token}"}, **kwargs)


@pytest.mark.slow(25)
def test_the_sweep_takes_away_a_role_it_did_not_grant_and_reports_a_missing_one(api, tenant):
    from registrations import sweep as sweeper
    from registrations import wiring

    extra = create(api, service("chg-sweep-extra"))
    missing = create(api, service("chg-sweep-missing"))
    scope = tenant.seed.dicom_resource_id
    subscription = scope.split("/")[2]
    added = arm(tenant, "PUT", f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}", json={
        "properties": {"roleDefinitionId": f"/subscriptions/{subscription}/providers/Microsoft.Authorization/"
                                           f"roleDefinitions/{OWNER}",
                       "principalId": extra["servicePrincipalId"], "principalType": "ServicePrincipal"}})
    assert added.status_code in (200, 201), added.text
    [assignment] = [a for a in tenant.state()["roleAssignments"]
                    if a["properties"]["principalId"] == missing["servicePrincipalId"]]
    assert arm(tenant, "DELETE", assignment["id"]).status_code == 200

    report = sweeper.run(wiring.runtime().service)
    drift = {item["registration"]: item["drift"] for item in report["drift"] if item["kind"] == "changed"}
    assert drift["chg-sweep-extra"] == [{"field": "access", "expected": ["DICOM Data Reader"],
                                         "actual": ["DICOM Data Owner", "DICOM Data Reader"]}]
    assert drift["chg-sweep-missing"] == [{"field": "access", "expected": ["DICOM Data Reader"], "actual": []}]
    assert {"kind": "ungrantedRemoved", "registration": "chg-sweep-extra", "fields": ["access"]} in report["repaired"]
    assert dicom_roles(tenant, extra["servicePrincipalId"]) == [READER]
    assert dicom_roles(tenant, missing["servicePrincipalId"]) == []  # granting is the owner's call: a PUT
    assert api.get("/registrations/chg-sweep-extra", params={"drift": "live"}).json()["drift"] == []


# ------------------------------------------------------------------------------------------- rollback
# Every remote call of a change that raises access, renames and adds a secret reader, failed for good once
# (the lease is a conditional write on the registry row: no Graph call). The first read of the application,
# before anything is written, and the last write, the labels in the portal, are among them.
CHANGE_CALLS = [("graph.getApplication", 1), ("graph.updateApplication", 1),
                ("arm.createRoleAssignment", 1), ("arm.listRoleAssignments", 4), ("arm.deleteRoleAssignment", 1),
                ("arm.listRoleAssignments", 5), ("arm.createRoleAssignment", 2), ("graph.updateApplication", 2)]


@pytest.mark.parametrize("operation,nth", CHANGE_CALLS, ids=[f"{o}-{n}" for o, n in CHANGE_CALLS])
def test_a_fault_at_any_step_of_a_change_leaves_the_registration_as_it_was(api, tenant, operation, nth):
    name = f"chg-fault-{operation.split('.')[1].lower()}-{nth}"
    reg = create(api, service(name))
    secret = reg["credential"]["keyVaultSecretName"]

    def snapshot() -> dict:
        [app] = [a for a in tenant.state()["applications"] if a["appId"] == reg["appId"]]
        return {"tags": sorted(app["tags"]), "displayName": app["displayName"],
                "roles": dicom_roles(tenant, reg["servicePrincipalId"]), "readers": readers_of(tenant, secret)}

    before, etag = snapshot(), api.get(f"/registrations/{name}").headers["etag"]
    tenant.set_faults({"failures": [{"operation": operation, "nth": nth, "status": 403, "times": 1}]})
    try:
        response = patch(api, name, {"displayName": "Renamed", "access": "writer",
                                     "secretReaders": [tenant.seed.reader_client.object_id]})
    finally:
        tenant.set_faults({})
    assert response.status_code in (502, 503), response.text
    problem = response.json()
    # A step that failed names itself; a read between steps failing is the upstream failure it is.
    assert (problem["type"].endswith(":provisioning-failed") and problem["failedStep"]) or (
        problem["type"].endswith(":upstream-failure") and problem["upstream"]["operation"] == operation.split(".")[1])
    assert snapshot() == before
    assert api.get(f"/registrations/{name}").headers["etag"] == etag
