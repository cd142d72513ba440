"""Fault mode "commit, then fail" (`"when": "after"`) and Graph/ARM answers while objects replicate or when they
already exist (docs/local-tenant.md, "Fault injection" and "Fidelity: replication lag and duplicates")."""
from __future__ import annotations

import uuid

import pytest
from localtenant_helpers import mi_token

OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
ROLE = "11111111-1111-1111-1111-111111111111"


def lose_answer(lt, operation: str, status: int = 503, **extra) -> None:
    lt.set_faults({"failures": [{"operation": operation, "nth": 1, "status": status, "when": "after", **extra}]})


def app_of(lt, app_id: str) -> dict:
    return next(a for a in lt.state()["applications"] if a["appId"] == app_id)


def put_role_assignment(lt, http, principal: str, name: str | None = None, principal_type: str | None = None):
    scope = lt.seed.vault_resource_id
    props = {"roleDefinitionId": f"/subscriptions/{lt.seed.subscription_id}/providers/Microsoft.Authorization/"
                                 f"roleDefinitions/{OFFICER}", "principalId": principal}
    if principal_type:
        props["principalType"] = principal_type
    token = mi_token(lt, http, "https://management.azure.com/")
    return http.put(f"{lt.arm_endpoint}{scope}/providers/Microsoft.Authorization/roleAssignments/"
                    f"{name or uuid.uuid4()}", params={"api-version": "2022-04-01"}, json={"properties": props},
                    headers={"Authorization": f"Bearer {token}"})


# -- "when": "after" ---------------------------------------------------------------------------------------
def test_add_password_is_minted_though_the_answer_is_lost(lt, graph):
    app = graph.upsert("lost-password").json()
    lose_answer(lt, "graph.addPassword")
    r = graph("POST", f"/applications/{app['id']}/addPassword", {"passwordCredential": {"displayName": "a"}})
    assert r.status_code == 503 and r.json()["error"]["code"] == "ServiceUnavailable"
    assert r.headers["Retry-After"] == "1" and "secretText" not in r.text
    assert [p["displayName"] for p in app_of(lt, app["appId"])["passwordCredentials"]] == ["a"]
    # The fault was for one call: the retry mints a second password and answers it.
    r = graph("POST", f"/applications/{app['id']}/addPassword", {"passwordCredential": {"displayName": "b"}})
    assert r.status_code == 200 and r.json()["secretText"]
    assert len(app_of(lt, app["appId"])["passwordCredentials"]) == 2


def test_service_principal_is_created_though_the_answer_is_lost(lt, graph):
    app = graph.upsert("lost-sp").json()
    lose_answer(lt, "graph.createServicePrincipal", status=504)
    r = graph("POST", "/servicePrincipals", {"appId": app["appId"]})
    assert r.status_code == 504 and r.json()["error"]["code"] == "GatewayTimeout"
    assert graph("GET", f"/servicePrincipals(appId='{app['appId']}')").status_code == 200
    again = graph("POST", "/servicePrincipals", {"appId": app["appId"]})
    assert again.status_code == 409 and again.json()["error"]["code"] == "Request_MultipleObjectsWithSameKeyValue"


def test_secret_version_is_written_though_the_answer_is_lost(lt, http):
    headers = {"Authorization": f"Bearer {mi_token(lt, http, 'https://vault.azure.net')}"}
    url, params = f"{lt.vault_url}/secrets/lost--answer--secret", {"api-version": "7.5"}
    lose_answer(lt, "keyvault.setSecret", status=500)
    r = http.put(url, params=params, json={"value": "written-anyway"}, headers=headers)
    assert r.status_code == 500 and r.json()["error"]["code"] == "InternalServerError"
    assert "written-anyway" not in r.text
    assert http.get(url, params=params, headers=headers).json()["value"] == "written-anyway"
    versions = [s for s in lt.state()["secrets"] if s["name"] == "lost--answer--secret"][0]["versions"]
    assert len(versions) == 1


def test_role_assignment_is_made_though_the_answer_is_lost(lt, http, graph):
    _, sp = graph.app_with_sp("lost-ra")
    name = str(uuid.uuid4())
    lose_answer(lt, "arm.createRoleAssignment")
    r = put_role_assignment(lt, http, sp["id"], name, "ServicePrincipal")
    assert r.status_code == 503 and r.json()["error"]["code"] == "ServiceUnavailable" and "Retry-After" in r.headers
    assert [a["name"] for a in lt.state()["roleAssignments"] if a["properties"]["principalId"] == sp["id"]] == [name]
    again = put_role_assignment(lt, http, sp["id"], name, "ServicePrincipal")
    assert again.status_code == 409 and again.json()["error"]["code"] == "RoleAssignmentExists"


def test_an_error_answer_is_replaced_too(lt, graph):
    """The call runs as usual; whatever it answered, success or its own error, the client sees the fault."""
    lose_answer(lt, "graph.createServicePrincipal")
    r = graph("POST", "/servicePrincipals", {"appId": str(uuid.uuid4())})  # would be 400
    assert r.status_code == 503


def test_before_is_the_default_and_does_nothing(lt, graph):
    app = graph.upsert("before").json()
    lt.set_faults({"failures": [{"operation": "graph.addPassword", "nth": 1, "status": 503}]})
    assert lt.faults()["failures"][0]["when"] == "before"
    assert graph("POST", f"/applications/{app['id']}/addPassword", {}).status_code == 503
    assert app_of(lt, app["appId"])["passwordCredentials"] == []


def test_after_counts_calls_like_before(lt, graph):
    app = graph.upsert("nth").json()
    lose_answer(lt, "graph.addPassword", nth=2, times=2)
    codes = [graph("POST", f"/applications/{app['id']}/addPassword", {}).status_code for _ in range(4)]
    assert codes == [200, 503, 503, 200]
    assert len(app_of(lt, app["appId"])["passwordCredentials"]) == 4


@pytest.mark.parametrize("failure", [
    {"operation": "graph.addPassword", "nth": 1, "status": 503, "when": "during"},
    {"operation": "graph.addPassword", "nth": 1, "status": 503, "whne": "after"},
])
def test_bad_failure_settings_are_refused(lt, http, failure):
    with pytest.raises(ValueError):
        lt.set_faults({"failures": [failure]})
    r = http.put(f"{lt.authority_host}/_admin/faults", json={"failures": [failure]})
    assert r.status_code == 400


# -- replication lag ---------------------------------------------------------------------------------------
def test_service_principal_for_an_app_not_yet_visible(lt, graph):
    lt.set_faults({"replicationDelayMs": 60_000})
    app = graph.upsert("lagging-app").json()
    r = graph("POST", "/servicePrincipals", {"appId": app["appId"]})
    error = r.json()["error"]
    message = f"The appId '{app['appId']}' of the service principal does not reference a valid application object."
    assert r.status_code == 400 and error["code"] == "Request_BadRequest" and error["message"] == message
    assert error["details"] == [{"code": "NoBackingApplicationObject", "message": message, "target": "appId"}]
    assert set(error["innerError"]) == {"date", "request-id", "client-request-id"}
    lt.advance_clock(61)
    assert graph("POST", "/servicePrincipals", {"appId": app["appId"]}).status_code == 201


def test_service_principal_for_an_unknown_app_id(graph):
    r = graph("POST", "/servicePrincipals", {"appId": str(uuid.uuid4())})
    assert r.status_code == 400 and r.json()["error"]["details"][0]["code"] == "NoBackingApplicationObject"


def test_other_errors_carry_no_details(graph):
    r = graph("GET", f"/applications/{uuid.uuid4()}")
    assert r.status_code == 404 and "details" not in r.json()["error"]


def _resource_with_role(graph) -> dict:
    _, rsp = graph.app_with_sp("lag-resource", {"identifierUris": ["api://lag-resource"], "appRoles": [
        {"id": ROLE, "value": "globalReader", "displayName": "r", "description": "r",
         "allowedMemberTypes": ["Application"], "isEnabled": True}]})
    return rsp


def test_app_role_assignment_for_a_principal_not_yet_visible(lt, graph):
    rsp = _resource_with_role(graph)
    app = graph.upsert("lag-client").json()
    lt.set_faults({"replicationDelayMs": 60_000})
    csp = graph("POST", "/servicePrincipals", {"appId": app["appId"]}).json()  # made now, visible in 60 s
    body = {"principalId": csp["id"], "resourceId": rsp["id"], "appRoleId": ROLE}
    r = graph("POST", f"/servicePrincipals/{rsp['id']}/appRoleAssignedTo", body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_BadRequest"
    assert r.json()["error"]["message"] == "Not a valid reference update."
    lt.advance_clock(61)
    assert graph("POST", f"/servicePrincipals/{rsp['id']}/appRoleAssignedTo", body).status_code == 201


def test_duplicate_app_role_assignment(graph):
    rsp = _resource_with_role(graph)
    _, csp = graph.app_with_sp("dup-client")
    body = {"principalId": csp["id"], "resourceId": rsp["id"], "appRoleId": ROLE}
    assert graph("POST", f"/servicePrincipals/{rsp['id']}/appRoleAssignedTo", body).status_code == 201
    r = graph("POST", f"/servicePrincipals/{rsp['id']}/appRoleAssignedTo", body)
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_BadRequest"
    assert r.json()["error"]["message"] == "Permission being assigned already exists on the object"


def test_grant_for_a_client_not_yet_visible_and_duplicate_grant(lt, graph):
    app = graph.upsert("lag-grant").json()
    lt.set_faults({"replicationDelayMs": 60_000})
    sp = graph("POST", "/servicePrincipals", {"appId": app["appId"]}).json()
    grant = {"clientId": sp["id"], "consentType": "AllPrincipals", "resourceId": lt.seed.first_party.dicom.object_id,
             "scope": "user_impersonation"}
    r = graph("POST", "/oauth2PermissionGrants", grant)
    assert r.status_code == 404 and r.json()["error"]["code"] == "Request_ResourceNotFound"
    assert r.json()["error"]["message"] == (f"Resource '{sp['id']}' does not exist or one of its queried "
                                            "reference-property objects are not present.")
    lt.advance_clock(61)
    assert graph("POST", "/oauth2PermissionGrants", grant).status_code == 201
    dup = graph("POST", "/oauth2PermissionGrants", grant)
    assert dup.status_code == 409 and dup.json()["error"] == {**dup.json()["error"],
                                                              "code": "Request_MultipleObjectsWithSameKeyValue",
                                                              "message": "Permission entry already exists."}


def test_role_assignment_for_a_principal_not_yet_visible(lt, http, graph):
    app = graph.upsert("lag-ra").json()
    lt.set_faults({"replicationDelayMs": 60_000})
    sp = graph("POST", "/servicePrincipals", {"appId": app["appId"]}).json()
    r = put_role_assignment(lt, http, sp["id"])
    assert r.status_code == 400 and r.json()["error"]["code"] == "PrincipalNotFound"
    assert r.json()["error"]["message"].startswith(f"Principal {sp['id'].replace('-', '')} does not exist in the "
                                                   f"directory {lt.tenant_id}.")
    assert put_role_assignment(lt, http, sp["id"], principal_type="ServicePrincipal").status_code == 201


# -- duplicates --------------------------------------------------------------------------------------------
def test_duplicate_federated_credential_name_and_subject(lt, graph):
    app = graph.upsert("dup-fic").json()
    fic = {"name": "ci", "issuer": lt.federated_issuer, "subject": "repo:x:ref:main",
           "audiences": ["api://AzureADTokenExchange"]}
    path = f"/applications/{app['id']}/federatedIdentityCredentials"
    assert graph("POST", path, fic).status_code == 201
    r = graph("POST", path, {**fic, "subject": "repo:x:ref:other"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "Request_MultipleObjectsWithSameKeyValue"
    assert r.json()["error"]["message"] == "FederatedIdentityCredential with name ci already exists."
    r = graph("POST", path, {**fic, "name": "ci2"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidFederatedIdentityCredentialValue"
    assert r.json()["error"]["message"].startswith("The combination of issuer and subject must be unique")


def test_duplicate_service_principal(graph):
    app, _ = graph.app_with_sp("dup-sp")
    r = graph("POST", "/servicePrincipals", {"appId": app["appId"]})
    assert r.status_code == 409 and r.json()["error"]["code"] == "Request_MultipleObjectsWithSameKeyValue"
    assert r.json()["error"]["message"] == ("The service principal cannot be created, updated, or restored because "
                                            f"the service principal name {app['appId']} is already in use.")
