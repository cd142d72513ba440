"""Graph queries, federated credentials, service principals, assignments, grants, owned objects, replication."""
from __future__ import annotations

import uuid

from localtenant_helpers import Graph, client_token



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
    # "Azure API for DICOM" (not "Azure Healthcare APIs", the FHIR one): one delegated scope, no app roles,
    # its audience listed with and without a trailing slash.
    dicom = found[0]
    assert (dicom["appId"], dicom["displayName"]) == ("75e725bf-66ce-4cea-9b9a-5c4caae57f33", "Azure API for DICOM")
    assert [s["value"] for s in dicom["oauth2PermissionScopes"]] == ["Dicom.ReadWrite"] and dicom["appRoles"] == []
    assert {"https://dicom.healthcareapis.azure.com", "https://dicom.healthcareapis.azure.com/"} <= set(
        dicom["servicePrincipalNames"])
    slash = "servicePrincipalNames/any(x:x eq 'https://dicom.healthcareapis.azure.com/')"
    assert [s["id"] for s in graph("GET", "/servicePrincipals", params={"$filter": slash}).json()["value"]] == [
        dicom["id"]]


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


def test_get_by_ids_returns_the_objects_that_exist_with_their_types(lt, graph):
    """directoryObject: getByIds (v1.0): POST {ids, types} answers 200 with `@odata.context` ...#directoryObjects
    and `value`, each object carrying its `@odata.type`; an id with no object is simply not in the answer."""
    _, sp = graph.app_with_sp("by-ids")
    missing = "0b944de3-e0fc-4774-a49a-b135213725ef"
    ids = [lt.seed.user.object_id, lt.seed.group.object_id, sp["id"], missing]
    r = graph("POST", "/directoryObjects/getByIds", {"ids": ids})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["@odata.context"] == f"{lt.graph_endpoint}/v1.0/$metadata#directoryObjects"
    found = {o["id"]: o["@odata.type"] for o in body["value"]}
    assert found == {lt.seed.user.object_id: "#microsoft.graph.user",
                     lt.seed.group.object_id: "#microsoft.graph.group",
                     sp["id"]: "#microsoft.graph.servicePrincipal"}
    # `types` narrows the collections searched; its values are not case-sensitive.
    only_users = graph("POST", "/directoryObjects/getByIds", {"ids": ids, "types": ["User"]}).json()["value"]
    assert [o["id"] for o in only_users] == [lt.seed.user.object_id]


def test_get_by_ids_refuses_what_is_not_a_guid_too_many_ids_and_callers_without_directory_read(lt, http, graph):
    assert graph("POST", "/directoryObjects/getByIds", {"ids": ["not-a-guid"]}).status_code == 400
    assert graph("POST", "/directoryObjects/getByIds", {}).status_code == 400
    too_many = [str(uuid.uuid4()) for _ in range(1001)]  # "You can specify up to 1000 IDs"
    assert graph("POST", "/directoryObjects/getByIds", {"ids": too_many}).status_code == 400
    assert graph("POST", "/directoryObjects/getByIds", {"ids": [], "types": ["printer"]}).status_code == 400
    # Least privileged permission: Directory.Read.All. A client with none of it is refused.
    seeded = lt.seed.reader_client
    token = client_token(lt, http, seeded.app_id, seeded.secret, "https://graph.microsoft.com/.default").json()
    other = Graph(lt, http, token["access_token"])
    denied = other("POST", "/directoryObjects/getByIds", {"ids": [lt.seed.user.object_id]})
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "Authorization_RequestDenied"


def test_get_by_ids_does_not_see_an_object_before_it_replicates(lt, graph):
    lt.set_faults({"replicationDelayMs": 60_000})
    app = graph.upsert("by-ids-lagging").json()
    assert graph("POST", "/directoryObjects/getByIds", {"ids": [app["id"]]}).json()["value"] == []
    lt.advance_clock(61)
    assert [o["id"] for o in graph("POST", "/directoryObjects/getByIds", {"ids": [app["id"]]}).json()["value"]] \
        == [app["id"]]
