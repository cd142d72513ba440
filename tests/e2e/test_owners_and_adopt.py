"""Owners and adoption need Application.ReadWrite.All on the API's identity (Graph: OwnedBy "isn't sufficient
to add another owner"), which the session's tenant does not grant. So these run on a tenant of their own
where the identity is granted it (through Graph, as an administrator would) and MANAGE_OWNERS is set."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from azure.identity import ManagedIdentityCredential

from tests.support import api_client, api_token, ca_context, settings_override, user_graph_token

GRAPH = "https://graph.microsoft.com/.default"
READ_WRITE_ALL = "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9"  # Application.ReadWrite.All (Graph permissions reference)


def graph_client(lt) -> httpx.Client:
    """Graph as the API's own identity sees it (an operator's view, through the same endpoint)."""
    token = ManagedIdentityCredential().get_token(GRAPH).token
    return httpx.Client(base_url=f"{lt.graph_endpoint}/v1.0", verify=ca_context(lt.ca_file), trust_env=False,
                        headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def owned(host) -> Iterator[tuple]:
    from localtenant import LocalTenant

    with LocalTenant.start() as lt, settings_override(**lt.app_settings(), MANAGE_OWNERS="true"):
        graph_sp = lt.seed.first_party.graph.object_id
        with graph_client(lt) as graph:  # the identity holds AppRoleAssignment.ReadWrite.All in the seed
            granted = graph.post(f"/servicePrincipals/{graph_sp}/appRoleAssignedTo", json={
                "principalId": lt.seed.product.object_id, "resourceId": graph_sp, "appRoleId": READ_WRITE_ALL})
            assert granted.status_code == 201, granted.text
        with api_client(host, api_token(lt, lt.seed.admin_client)) as api:
            yield lt, api


def owners_of(lt, collection: str, object_id: str) -> set[str]:
    with graph_client(lt) as graph:
        return {o["id"] for o in graph.get(f"/{collection}/{object_id}/owners").json()["value"]}


def service(name: str, **extra) -> dict:
    return {"type": "service", "name": name, "displayName": name, "dicomService": "managed", "access": "reader",
            **extra}


def test_owners_become_owners_of_the_app_and_its_service_principal_and_the_api_stays_one(owned):
    lt, api = owned
    user, team = lt.seed.user.object_id, lt.seed.requester_client.object_id
    product = lt.seed.product.object_id
    made = api.post("/registrations", json=service("own-router", owners=[user]))
    assert made.status_code == 201, made.text
    reg = made.json()
    assert reg["owners"] == [user]
    assert owners_of(lt, "applications", reg["objectId"]) == {user, product}
    assert owners_of(lt, "servicePrincipals", reg["servicePrincipalId"]) >= {user, product}

    changed = api.patch("/registrations/own-router", content=json.dumps({"owners": [team]}),
                        headers={"Content-Type": "application/merge-patch+json"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["changed"] == ["owners"] and changed.json()["owners"] == [team]
    assert owners_of(lt, "applications", reg["objectId"]) == {team, product}
    assert api.get("/registrations/own-router", params={"drift": "live"}).json()["drift"] == []

    # An owner removed in the portal is drift; PUT of the same desired state puts it back.
    with graph_client(lt) as graph:
        gone = graph.delete(f"/applications/{reg['objectId']}/owners/{team}/$ref")
        assert gone.status_code == 204, gone.text
    drift = api.get("/registrations/own-router", params={"drift": "live"}).json()["drift"]
    assert drift == [{"field": "owners", "expected": [team], "actual": []}]
    repaired = api.put("/registrations/own-router", json=service("own-router", owners=[team]))
    assert repaired.status_code == 200 and repaired.json()["changed"] == ["owners"]
    assert owners_of(lt, "applications", reg["objectId"]) == {team, product}


def test_an_owner_change_that_fails_half_way_is_undone(owned):
    lt, api = owned
    user, product = lt.seed.user.object_id, lt.seed.product.object_id
    reg = api.post("/registrations", json=service("own-undo")).json()
    # The second addOwner (the service principal's) fails for good: the application's owner is taken off again.
    lt.set_faults({"failures": [{"operation": "graph.addOwner", "nth": 2, "status": 403, "times": 1}]})
    try:
        failed = api.patch("/registrations/own-undo", content=json.dumps({"owners": [user]}),
                           headers={"Content-Type": "application/merge-patch+json"})
    finally:
        lt.set_faults({})
    assert failed.status_code == 502, failed.text
    assert failed.json()["failedStep"] == f"add owner {user}" and "add owner" in failed.json()["undoneSteps"][0]
    assert owners_of(lt, "applications", reg["objectId"]) == {product}
    assert api.get("/registrations/own-undo").json()["owners"] == []


def test_an_owner_that_does_not_exist_is_refused_before_anything_is_written(owned):
    lt, api = owned
    before = len(lt.state()["applications"])
    refused = api.post("/registrations", json=service("own-ghost", owners=["00000000-0000-0000-0000-00000000dead"]))
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["loc"][-2:] == ["owners", 0]
    assert len(lt.state()["applications"]) == before


def test_an_application_made_in_graph_is_adopted_with_its_client_id(owned):
    lt, api = owned
    redirect = "https://legacy.example.org/signin-oidc"
    with graph_client(lt) as graph:
        made = graph.post("/applications", json={"displayName": "Legacy portal", "tags": ["team:imaging"],
                                                 "web": {"redirectUris": [redirect]}})
        assert made.status_code == 201, made.text
        legacy = made.json()
        password = graph.post(f"/applications/{legacy['id']}/addPassword",
                              json={"passwordCredential": {"displayName": "theirs"}})
        assert password.status_code == 200
    body = {"appId": legacy["appId"], "type": "confidential", "dicomService": "managed"}
    adopted = api.post("/registrations/legacy-portal/adopt", json=body)
    assert adopted.status_code == 201, adopted.text
    reg = adopted.json()
    assert reg["appId"] == legacy["appId"] and reg["redirectUris"] == [redirect]
    assert adopted.headers["location"].endswith("/registrations/legacy-portal")
    assert reg["name"] == "legacy-portal" and reg["state"] == "ready"
    assert api.get("/registrations/legacy-portal").json()["appId"] == legacy["appId"]
    assert "legacy-portal" in {r["name"] for r in api.get("/registrations").json()["value"]}
    [app] = [a for a in lt.state()["applications"] if a["appId"] == legacy["appId"]]
    assert app["uniqueName"] == "dicomreg-legacy-portal" and "team:imaging" in app["tags"]
    assert [p["displayName"] for p in app["passwordCredentials"]] == ["theirs"]  # no credential changed
    again = api.post("/registrations/legacy-portal/adopt", json=body)
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert api.post("/registrations/legacy-other/adopt", json=body).status_code == 409


def test_only_administrators_adopt(owned, host):
    lt, _ = owned
    with api_client(host, api_token(lt, lt.seed.requester_client)) as requester:
        refused = requester.post("/registrations/not-mine/adopt", json={
            "appId": lt.seed.api.app_id, "type": "service", "dicomService": "managed", "access": "reader"})
    assert refused.status_code == 403 and refused.json()["requiredRoles"] == ["Registrations.Admin"]


def test_an_adopted_team_application_keeps_its_owners_through_the_sweep(owned):
    """Adoption records the owners the application has (the team) and the credential kind really there (none
    yet: not a missing secret); the sweep, which takes away owners nobody asked for, leaves the team owner."""
    from registrations import sweep, wiring

    lt, api = owned
    member = lt.seed.member.object_id
    token = user_graph_token(lt, lt.seed.member.upn)
    with httpx.Client(base_url=f"{lt.graph_endpoint}/v1.0", verify=ca_context(lt.ca_file), trust_env=False,
                      headers={"Authorization": f"Bearer {token}"}) as graph:
        made = graph.post("/applications", json={"displayName": "Team viewer",
                                                 "web": {"redirectUris": ["https://team.example.org/signin"]}})
        assert made.status_code == 201, made.text
    team_app = made.json()
    adopted = api.post("/registrations/team-viewer/adopt",
                       json={"appId": team_app["appId"], "type": "confidential", "dicomService": "managed"})
    assert adopted.status_code == 201, adopted.text
    assert adopted.json()["owners"] == [member]

    report = sweep.run(wiring.runtime().service)

    assert member in owners_of(lt, "applications", team_app["id"])
    assert not [r for r in report["repaired"] if r.get("registration") == "team-viewer"], report
    assert not [d for d in report["drift"] if d.get("registration") == "team-viewer"], report
    assert api.get("/registrations/team-viewer", params={"drift": "live"}).json()["drift"] == []


def test_owners_past_entras_limit_are_a_422_naming_it(owned):
    """Entra keeps at most 100 owners on an object and refuses the next with 403 Directory_QuotaExceeded: a
    create whose owners would pass it answers 422 naming the limit, with everything it made undone.
    Mutation: drop the `ownersPerObject` check from `Owners.add` and the create succeeds (201)."""
    lt, api = owned
    lt.set_settings({"ownersPerObject": 1})  # the API's identity is the one owner already
    try:
        made = api.post("/registrations", json=service("own-too-many", owners=[lt.seed.user.object_id]))
    finally:
        lt.set_settings({})
    assert made.status_code == 422, made.text
    assert "at most 100 owners" in made.json()["detail"]
    assert made.json()["errors"][0]["loc"] == ["owners"]
    apps = [a for a in lt.state()["applications"] if a.get("uniqueName") == "dicomreg-own-too-many"]
    assert apps == []
