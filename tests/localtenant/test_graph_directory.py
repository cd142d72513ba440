"""Graph queries, federated credentials, service principals, assignments, grants, owned objects, replication."""
from __future__ import annotations



def test_filter_top_select_and_next_link(graph):
    for i in range(5):
        graph.upsert(f"reg-{i}", {"tags": ["dicom-registration", f"dicom-target:{'prod' if i % 2 else 'dev'}"]})
    q = "tags/any(t:t eq 'dicom-registration') and tags/any(t:t eq 'dicom-target:prod')"
    r = graph("GET", "/applications", params={"$filter": q, "$select": "id,uniqueName", "$top": "1"}).json()
    assert r["@odata.context"].endswith("#applications(id,uniqueName)")
    assert set(r["value"][0]) == {"id", "uniqueName"}
    names = [r["value"][0]["uniqueName"]]
    while "@odata.nextLink" in r:
        r = graph.http.get(r["@odata.nextLink"], headers={"Authorization": f"Bearer {graph.token}"}).json()
        names += [v["uniqueName"] for v in r["value"]]
    assert sorted(names) == ["reg-1", "reg-3"]
    one = graph("GET", "/applications", params={"$filter": "uniqueName eq 'reg-2'"}).json()["value"]
    assert [a["uniqueName"] for a in one] == ["reg-2"]
    assert graph("GET", "/applications", params={"$filter": "bogus("}).status_code == 400


def test_first_party_sp_by_service_principal_name(lt, graph):
    q = "servicePrincipalNames/any(x:x eq 'https://dicom.healthcareapis.azure.com')"
    found = graph("GET", "/servicePrincipals", params={"$filter": q}).json()["value"]
    assert [s["id"] for s in found] == [lt.seed.first_party.dicom.object_id]
    assert {s["value"] for s in found[0]["oauth2PermissionScopes"]} == {"Dicom.ReadWrite", "user_impersonation"}


def test_federated_credential_gets_token(lt, http, graph):
    app, sp = graph.app_with_sp("secretless")
    fic = {"name": "ci", "issuer": lt.federated_issuer, "subject": "repo:x:ref:main",
           "audiences": ["api://AzureADTokenExchange"]}
    r = graph("POST", f"/applications/{app['id']}/federatedIdentityCredentials", fic)
    assert r.status_code == 201 and r.json()["subject"] == "repo:x:ref:main"
    listed = graph("GET", f"/applications/{app['id']}/federatedIdentityCredentials").json()["value"]
    assert [f["name"] for f in listed] == ["ci"]

    def token(subject):
        return http.post(f"{lt.authority}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": app["appId"],
            "scope": "https://graph.microsoft.com/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": lt.federated_assertion(subject)}).json()
    assert "access_token" in token("repo:x:ref:main")
    assert token("repo:x:ref:other")["error_codes"] == [70021]
    assert graph("DELETE", f"/applications/{app['id']}/federatedIdentityCredentials/ci").status_code == 204


def test_app_role_assignment_gives_roles(lt, http, graph):
    resource, rsp = graph.app_with_sp("oss-api", {"identifierUris": ["api://oss-dicom"], "appRoles": [
        {"id": "11111111-1111-1111-1111-111111111111", "value": "globalReader", "displayName": "r",
         "description": "r", "allowedMemberTypes": ["Application"], "isEnabled": True}]})
    client, csp = graph.app_with_sp("oss-client")
    secret = graph.secret(client["id"])["secretText"]
    body = {"principalId": csp["id"], "resourceId": rsp["id"], "appRoleId": "11111111-1111-1111-1111-111111111111"}
    r = graph("POST", f"/servicePrincipals/{rsp['id']}/appRoleAssignedTo", body)
    assert r.status_code == 201, r.text
    assert graph("POST", f"/servicePrincipals/{rsp['id']}/appRoleAssignedTo", body).status_code == 400
    listed = graph("GET", f"/servicePrincipals/{csp['id']}/appRoleAssignments").json()["value"]
    assert [a["appRoleId"] for a in listed] == [body["appRoleId"]]
    from localtenant_helpers import claims, client_token
    tok = client_token(lt, http, client["appId"], secret, "api://oss-dicom/.default").json()["access_token"]
    assert claims(tok)["roles"] == ["globalReader"] and claims(tok)["aud"] == "api://oss-dicom"
    assert graph("DELETE", f"/servicePrincipals/{rsp['id']}/appRoleAssignedTo/{r.json()['id']}").status_code == 204


def test_grants_filter_and_delete(lt, graph):
    _, sp = graph.app_with_sp("granted")
    g = graph("POST", "/oauth2PermissionGrants", {"clientId": sp["id"], "consentType": "AllPrincipals",
                                                  "resourceId": lt.seed.first_party.dicom.object_id,
                                                  "scope": "user_impersonation"}).json()
    found = graph("GET", "/oauth2PermissionGrants", params={"$filter": f"clientId eq '{sp['id']}'"}).json()
    assert [x["id"] for x in found["value"]] == [g["id"]]
    assert graph("DELETE", f"/oauth2PermissionGrants/{g['id']}").status_code == 204


def test_owned_objects_and_cascade_delete(lt, graph):
    app, sp = graph.app_with_sp("owned")
    owned = graph("GET", f"/servicePrincipals/{lt.seed.product.object_id}/ownedObjects").json()["value"]
    assert {(o["@odata.type"], o["id"]) for o in owned} == {("#microsoft.graph.application", app["id"]),
                                                            ("#microsoft.graph.servicePrincipal", sp["id"])}
    assert graph("DELETE", "/applications(uniqueName='owned')").status_code == 204
    assert graph("GET", f"/servicePrincipals/{sp['id']}").status_code == 404
    state = lt.state()
    assert all(a["uniqueName"] != "owned" for a in state["applications"])


def test_replication_delay(lt, graph):
    lt.set_faults({"replicationDelayMs": 60_000})
    app = graph.upsert("slow").json()
    assert graph("GET", f"/applications/{app['id']}").status_code == 404
    r = graph("POST", "/servicePrincipals", {"appId": app["appId"]})
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_BadRequest"
    assert graph.upsert("slow", {"notes": "by uniqueName"}).status_code == 204  # sees it at once
    lt.advance_clock(61)
    assert graph("GET", f"/applications/{app['id']}").json()["notes"] == "by uniqueName"


def test_graph_requires_a_graph_token(lt, http):
    r = http.get(f"{lt.graph_endpoint}/v1.0/applications")
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_state_dump_has_no_secrets(lt, graph, http):
    app = graph.upsert("dump").json()
    secret = graph.secret(app["id"])["secretText"]
    text = http.get(f"{lt.authority_host}/_admin/state").text
    assert secret not in text and "_hash" not in text and lt.seed.admin_client.secret not in text
