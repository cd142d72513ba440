"""Owners of applications and service principals, as Graph's owners pages describe them (docs/local-tenant.md,
"Fidelity: owners")."""

from __future__ import annotations

import pytest

from localtenant import LocalTenant

from localtenant_helpers import graph_client as graph, identity_token, ref

READ_WRITE_ALL = "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


@pytest.fixture(scope="module")
def lt():
    with LocalTenant.start() as tenant:
        yield tenant


def test_owners_need_read_write_all_and_are_users_or_service_principals(lt):
    user = lt.seed.user.object_id
    with graph(lt, identity_token(lt)) as owned_by:  # the product identity: Application.ReadWrite.OwnedBy
        app = owned_by.post("/applications", json={"displayName": "owners"}).json()
        assert [o["id"] for o in owned_by.get(f"/applications/{app['id']}/owners").json()["value"]] == [
            lt.seed.product.object_id]
        refused = owned_by.post(f"/applications/{app['id']}/owners/$ref", json=ref(user))
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "Authorization_RequestDenied"
        graph_sp = lt.seed.first_party.graph.object_id
        granted = owned_by.post(f"/servicePrincipals/{graph_sp}/appRoleAssignedTo", json={
            "principalId": lt.seed.product.object_id, "resourceId": graph_sp, "appRoleId": READ_WRITE_ALL})
        assert granted.status_code == 201
    with graph(lt, identity_token(lt)) as all_apps:  # a new token carries Application.ReadWrite.All
        added = all_apps.post(f"/applications/{app['id']}/owners/$ref", json=ref(user))
        assert added.status_code == 204, added.text
        listed = all_apps.get(f"/applications/{app['id']}/owners").json()["value"]
        assert {(o["@odata.type"], o["id"]) for o in listed} == {
            ("#microsoft.graph.user", user), ("#microsoft.graph.servicePrincipal", lt.seed.product.object_id)}
        again = all_apps.post(f"/applications/{app['id']}/owners/$ref", json=ref(user))
        assert again.status_code == 400 and again.json()["error"]["message"] == (
            "One or more added object references already exist for the following modified properties: 'owners'.")
        ghost = all_apps.post(f"/applications/{app['id']}/owners/$ref", json=ref("00000000-0000-0000-0000-0000000000aa"))
        assert ghost.status_code == 404
        group = all_apps.post(f"/applications/{app['id']}/owners/$ref", json=ref(lt.seed.group.object_id))
        assert group.status_code == 400
        assert all_apps.delete(f"/applications/{app['id']}/owners/{user}/$ref").status_code == 204
        assert all_apps.delete(f"/applications/{app['id']}/owners/{user}/$ref").status_code == 404
        sp = all_apps.post("/servicePrincipals", json={"appId": app["appId"]}).json()
        assert all_apps.post(f"/servicePrincipals/{sp['id']}/owners/$ref", json=ref(user)).status_code == 204
        assert user in {o["id"] for o in all_apps.get(f"/servicePrincipals/{sp['id']}/owners").json()["value"]}
