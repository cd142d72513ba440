"""The local tenant tells the truth about consistency and about what a member user may do (docs/local-tenant.md,
"Fidelity: consistency and member users"). Each test names one change to the tenant that would make it fail."""

from __future__ import annotations

import pytest

from localtenant_helpers import graph_client as graph, identity_token, ref
from tests.support import user_graph_token


def test_app_only_reads_show_the_previous_value_of_an_updated_property_for_a_while(lt):
    """Mutation: make `GraphBackend.replica` return the object as stored and the first stale read shows the
    new tags; make it ignore `caller.app_only` and the owner's delegated read shows the old ones."""
    assert lt.set_settings({"staleReadsMs": 30_000})["staleReadsMs"] == 30_000
    member = user_graph_token(lt, lt.seed.member.upn)
    with graph(lt, identity_token(lt)) as app_only, graph(lt, member) as user:
        created = user.post("/applications", json={"displayName": "stale", "tags": ["lease:none"]})
        assert created.status_code == 201, created.text
        app = created.json()
        assert user.post(f"/applications/{app['id']}/owners/$ref", json=ref(lt.seed.product.object_id)
                         ).status_code == 204
        assert user.patch(f"/applications/{app['id']}", json={"tags": ["lease:mine"], "notes": "x"}
                          ).status_code == 204
        # The application's own identity reads through a replica that has not applied the update yet.
        stale = app_only.get(f"/applications/{app['id']}").json()
        assert (stale["tags"], stale["notes"]) == (["lease:none"], None)
        listed = app_only.get("/applications", params={"$filter": "tags/any(t:t eq 'lease:none')"}).json()
        assert [a["id"] for a in listed["value"]] == [app["id"]]
        # A second update within the window: the lagging replica still shows the oldest value.
        assert user.patch(f"/applications/{app['id']}", json={"tags": ["lease:yours"]}).status_code == 204
        assert app_only.get(f"/applications/{app['id']}").json()["tags"] == ["lease:none"]
        # The signed-in user (delegated) reads their own writes.
        assert user.get(f"/applications/{app['id']}").json()["tags"] == ["lease:yours"]
        lt.advance_clock(31)
        fresh = app_only.get(f"/applications/{app['id']}").json()
        assert (fresh["tags"], fresh["notes"]) == (["lease:yours"], "x")


def test_stale_reads_are_off_unless_asked_for(lt):
    """Mutation: default `staleReadsMs` to 30000 in runtime.DirectorySettings and the app-only read right
    after the update shows the old tags."""
    assert lt.settings()["staleReadsMs"] == 0
    with graph(lt, identity_token(lt)) as app_only:
        app = app_only.post("/applications", json={"displayName": "calm", "tags": ["a"]}).json()
        assert app_only.patch(f"/applications/{app['id']}", json={"tags": ["b"]}).status_code == 204
        assert app_only.get(f"/applications/{app['id']}").json()["tags"] == ["b"]
    with pytest.raises(ValueError):
        lt.set_settings({"staleReadsMs": "5000"})  # no coercion
    with pytest.raises(ValueError):
        lt.set_settings({"staleReadsMs": -1})


def test_service_principal_reads_lag_too(lt):
    """Mutation: drop the `self.replica(...)` calls from `GraphBackend.sp_view` and the principal read right
    after its application's rename shows the new name."""
    lt.set_settings({"staleReadsMs": 30_000})
    with graph(lt, identity_token(lt)) as app_only:
        app = app_only.post("/applications", json={"displayName": "before"}).json()
        sp = app_only.post("/servicePrincipals", json={"appId": app["appId"]}).json()
        assert app_only.patch(f"/applications/{app['id']}", json={"displayName": "after"}).status_code == 204
        assert app_only.get(f"/servicePrincipals/{sp['id']}").json()["displayName"] == "before"
        lt.advance_clock(31)
        assert app_only.get(f"/servicePrincipals/{sp['id']}").json()["displayName"] == "after"


def test_a_member_user_registers_an_application_names_it_tags_it_and_adds_owners(lt):
    """The pre-squatted name of issue 21, reproducible: a member user with no directory role, through the
    Azure CLI's client, creates an application with a uniqueName and tags and makes the API's identity a
    co-owner. Mutation: make `Caller.require_create` refuse delegated callers (or `require_owner_change`
    refuse them) and the create (or the owner add) is a 403."""
    member, product = lt.seed.member, lt.seed.product.object_id
    token = user_graph_token(lt, member.upn)
    with graph(lt, token) as user, graph(lt, identity_token(lt)) as app_only:
        created = user.post("/applications", json={
            "displayName": "victim", "uniqueName": "dicomreg-victim",
            "tags": ["dicom-registration", "provisioning:creating"]})
        assert created.status_code == 201, created.text
        app = created.json()
        owners = user.get(f"/applications/{app['id']}/owners").json()["value"]
        assert [o["id"] for o in owners] == [member.object_id]
        assert user.post(f"/applications/{app['id']}/owners/$ref", json=ref(product)).status_code == 204
        # The API's identity now owns it (OwnedBy lets it read and write it) and sees what the user wrote.
        seen = app_only.get("/applications(uniqueName='dicomreg-victim')")
        assert seen.status_code == 200, seen.text
        assert seen.json()["tags"] == ["dicom-registration", "provisioning:creating"]
        owned = app_only.get(f"/servicePrincipals/{product}/ownedObjects").json()["value"]
        assert app["id"] in [o["id"] for o in owned]
        # The user is still an owner: they may add a password to it after the API has finished it.
        assert user.post(f"/applications/{app['id']}/addPassword", json={"passwordCredential": {}}
                         ).status_code == 200


def test_a_member_user_changes_only_what_they_own(lt):
    """Mutation: let `Caller.require_write` accept any delegated caller with Application.ReadWrite.All and the
    member's PATCH of another's application succeeds; drop the `usersCanRegisterApplications` check and the
    create with the setting off succeeds."""
    token = user_graph_token(lt, lt.seed.member.upn)
    with graph(lt, token) as user, graph(lt, identity_token(lt)) as app_only:
        theirs = app_only.post("/applications", json={"displayName": "not the member's"}).json()
        assert user.get(f"/applications/{theirs['id']}").status_code == 200  # members read applications
        assert user.patch(f"/applications/{theirs['id']}", json={"tags": ["x"]}).status_code == 403
        assert user.post(f"/applications/{theirs['id']}/owners/$ref",
                         json=ref(lt.seed.member.object_id)).status_code == 403
        lt.set_settings({"usersCanRegisterApplications": False})
        refused = user.post("/applications", json={"displayName": "refused"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "Authorization_RequestDenied"
    read_only = user_graph_token(lt, lt.seed.member.upn, scopes=("User.Read",))
    with graph(lt, read_only) as user:
        lt.set_settings({})
        assert user.post("/applications", json={"displayName": "no scope"}).status_code == 403
