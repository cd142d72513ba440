"""Entra as it really behaves (issue 24, docs/local-tenant.md "Directory settings"): the product against each
behaviour of the local tenant that is on by default. Each test names one change to the tenant that would make it
fail (the behaviour removed), as the connector-rule tests do."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.support import ca_context, create, objects_named, service, settings_override, user_graph_token


def graph_as(tenant, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{tenant.graph_endpoint}/v1.0", verify=ca_context(tenant.ca_file), trust_env=False,
                        headers={"Authorization": f"Bearer {token}"})


@contextlib.contextmanager
def directory(tenant, **settings) -> Iterator[None]:
    """Directory settings for one test, back to the defaults after it (the tenant is shared by the session)."""
    tenant.set_settings(settings)
    try:
        yield
    finally:
        tenant.set_settings({})
        tenant.set_faults({})


@pytest.mark.parametrize("status", [409, 503])
def test_a_credential_write_right_after_another_is_refused_and_retried(api, tenant, status):
    """Two rotations in a row: the second one's addPassword reaches Graph within the credential write window
    after the first one's, and Entra refuses it with Directory_ConcurrencyViolation (as 409, and as 503 as
    azure-cli issue 23081 shows on addPassword). It did nothing, so the product repeats it after a pause and the
    rotation succeeds with one new password.
    Mutation: in `Applications._credential_write` compare `arrived < last[1]` (no window) and addPassword is
    called three times, not four."""
    with directory(tenant, credentialWriteWindowMs=2500, concurrencyViolationStatuses=[status]):
        name = f"busy-twice-{status}"
        create(api, service(name))
        before = tenant.stats()["calls"].get("graph.addPassword", 0)
        first = api.post(f"/registrations/{name}/credentials", headers={"Idempotency-Key": f"{name}-1"})
        second = api.post(f"/registrations/{name}/credentials", headers={"Idempotency-Key": f"{name}-2"})
        calls = tenant.stats()["calls"].get("graph.addPassword", 0) - before
    assert first.status_code == 201, first.text
    assert second.status_code == 201, second.text
    assert calls >= 3  # the second rotation's first addPassword was refused, then repeated
    app = objects_named(tenant, name)["applications"][0]
    assert len(app["passwordCredentials"]) == 3  # the create's and one per rotation


@pytest.mark.parametrize("status", [400, 409])
def test_a_name_held_in_deleted_items_is_taken_in_either_shape(api, tenant, status):
    """A member user registered `dicomreg-{name}` and deleted it: it sits in deleted items for 30 days, keeping
    its uniqueName. The API's create meets the name taken, answered as 400 Request_BadRequest (as evidenced) or
    409 Request_MultipleObjectsWithSameKeyValue (as Graph answers other alternate keys), and either way answers
    409 naming the deleted holder, with nothing made.
    Mutation: drop the `self.deleted.holding(...)` half of `Applications._require_free_name` and the create
    succeeds (201) over the deleted holder's name."""
    name = f"held-deleted-{status}"
    with directory(tenant, uniqueNameConflictStatus=status), \
            graph_as(tenant, user_graph_token(tenant, tenant.seed.member.upn)) as member:
        held = member.post("/applications", json={"displayName": name, "uniqueName": f"dicomreg-{name}"})
        assert held.status_code == 201, held.text
        assert member.delete(f"/applications/{held.json()['id']}").status_code == 204
        response = api.post("/registrations", json=service(name))
    assert response.status_code == 409, response.text
    assert held.json()["id"] in response.text
    assert objects_named(tenant, name)["applications"] == []


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("call", ["rotate", "create", "credentials"])
def test_a_vault_that_does_not_answer_is_a_503_never_a_500(api, tenant, call):
    """Key Vault unreachable (nothing listens where it should be; the chaos run met it with the tenant down, on a
    rotation's version listing): every call that needs it answers 503 with Retry-After, never a 500: a read or a
    rotation as upstream-unavailable, a create as provisioning-failed naming the step it was undone from; a
    create or rotation undoes what it made. (The local tenant's part here is only to be absent.)"""
    name = f"vault-down-{call}"
    if call != "create":
        create(api, service(name))
    with settings_override(KEY_VAULT_URL=f"https://127.0.0.1:{_closed_port()}"):
        if call == "create":
            response = api.post("/registrations", json=service(name))
        elif call == "rotate":
            response = api.post(f"/registrations/{name}/credentials", headers={"Idempotency-Key": name})
        else:
            response = api.get(f"/registrations/{name}/credentials")
    assert response.status_code == 503, response.text
    kind = "provisioning-failed" if call == "create" else "upstream-unavailable"
    assert response.json()["type"].endswith(f":{kind}"), response.text
    assert response.json()["upstream"]["service"] == "keyvault" and response.json()["upstream"]["status"] is None
    assert response.headers["Retry-After"].isdigit()
    made = objects_named(tenant, name)
    assert len(made["passwords"]) == (0 if call == "create" else 1)


def test_a_sign_in_group_at_entras_assignment_limit_is_a_409_naming_it(api, tenant):
    """A group holds at most 1,500 app role assignments (a sign-in group assigned to many applications reaches
    it): Graph refuses the next with Directory_QuotaExceeded, and the create answers 409 naming the limit and
    what to do, with everything it made undone.
    Mutation: drop the `appRoleAssignmentsPerPrincipal` check from `Principals.create_assignment` and the create
    succeeds (201)."""
    group = tenant.seed.group.object_id
    held = sum(1 for a in tenant.state()["appRoleAssignments"] if a["principalId"] == group)
    name = "group-at-limit"
    with directory(tenant, appRoleAssignmentsPerPrincipal=held):
        response = api.post("/registrations", json={
            "type": "public", "name": name, "displayName": name, "dicomService": "managed", "platform": "spa",
            "redirectUris": ["https://limit.example.org/callback"], "signInGroups": [group]})
    assert response.status_code == 409, response.text
    assert "1500 app role assignments" in response.json()["detail"] and "signInGroups" in response.json()["detail"]
    assert objects_named(tenant, name)["applications"] == []


def test_an_application_past_entras_size_limit_is_a_422_naming_it(api, tenant):
    """Entra refuses an object past its size limit (Directory_ResourceSizeExceeded, 403): a change that would
    make the application too large answers 422 saying to send fewer redirect URIs, and the application keeps
    its old ones.
    Mutation: make `Applications._require_size` never raise and the PATCH succeeds (200)."""
    name = "too-large"
    old = ["https://large.example.org/callback"]
    create(api, {"type": "public", "name": name, "displayName": name, "dicomService": "managed",
                 "platform": "spa", "redirectUris": old})
    app = objects_named(tenant, name)["applications"][0]
    many = [f"https://large.example.org/{'x' * 180}/{i}" for i in range(20)]
    with directory(tenant, objectSizeLimitBytes=len(json.dumps(app)) + 1000):
        response = api.patch(f"/registrations/{name}", content=json.dumps({"redirectUris": many}),
                             headers={"Content-Type": "application/merge-patch+json"})
    assert response.status_code == 422, response.text
    assert "too large" in response.json()["detail"] and "redirect URIs" in response.json()["detail"]
    assert objects_named(tenant, name)["applications"][0]["spa"]["redirectUris"] == old


def test_the_tenants_object_quota_is_a_409_naming_it(api, tenant):
    """Entra's tenant-wide quota (50,000 directory objects without a verified domain) refuses a create with
    Directory_QuotaExceeded as the identity's own quota does: the create answers 409 quota-exceeded naming both
    quotas, with what it made undone.
    Mutation: drop the `tenantObjectQuota` check from `DeletedItems.require_quota` and the create succeeds."""
    state = tenant.state()
    objects = sum(len(state[k]) for k in ("applications", "servicePrincipals", "users", "groups", "deletedItems"))
    name = "tenant-full"
    with directory(tenant, tenantObjectQuota=objects + 1):  # room for the application, not its principal
        response = api.post("/registrations", json=service(name))
    assert response.status_code == 409, response.text
    assert response.json()["type"].endswith(":quota-exceeded") and "50,000" in response.json()["detail"]
    assert objects_named(tenant, name)["applications"] == []


RESTRICT_URIS = {"isEnabled": True, "applicationRestrictions": {"identifierUris": {
    "nonDefaultUriAddition": {"state": "enabled"},
    "uriAdditionWithoutUniqueTenantIdentifier": {"state": "enabled"}}}}


def test_identifier_uri_restrictions_allow_the_default_and_name_the_rule_for_a_requested_uri(api, tenant,
                                                                                                  app_settings):
    """An app management policy may refuse any identifier URI but api://{appId} and api://{tenantId}/{appId}
    (nonDefaultUriAddition) or any without the tenant id, appId or a verified domain
    (uriAdditionWithoutUniqueTenantIdentifier). The default identifier URI of a resource registration,
    api://{tenantId}/{appId}, passes both; a requested api://{tenantId}/{string} is a 422 naming the rule.
    Mutation: make `Policies.check_identifier_uris` return at once and the requested URI is accepted (201)."""
    targets = json.loads(app_settings["DICOM_SERVICES"])
    targets["oss-uri"] = {"kind": "oss", "url": "https://oss-uri.local.test", "resourceRegistration": "uri-api"}
    body = {"type": "resource", "name": "uri-api", "displayName": "URI API", "dicomService": "oss-uri"}
    tenant.set_app_management_policy(RESTRICT_URIS)
    try:
        with settings_override(DICOM_SERVICES=json.dumps(targets)):
            refused = api.post("/registrations", json={**body, "identifierUri": f"api://{tenant.tenant_id}/uri"})
            made = api.post("/registrations", json=body)
            again = api.post("/registrations", json=body)  # a replay matches the default it has
            assert api.delete("/registrations/uri-api").status_code == 200
    finally:
        tenant.set_app_management_policy({"isEnabled": False, "applicationRestrictions": {}})
    assert refused.status_code == 422, refused.text
    assert "nonDefaultUriAddition" in refused.json()["detail"] and refused.json()["errors"][0]["loc"] == [
        "identifierUri"]
    assert made.status_code == 201, made.text
    assert made.json()["identifierUri"] == f"api://{tenant.tenant_id}/{made.json()['appId']}"
    assert again.status_code == 200, again.text
