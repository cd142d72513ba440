"""Deleted items and the per-principal object quota, as Entra has them (docs/local-tenant.md, "Fidelity:
deleted items and the object quota")."""
from __future__ import annotations

from localtenant_helpers import Graph, client_token

DELETED_APPS = "/directory/deletedItems/microsoft.graph.application"
DELETED_SPS = "/directory/deletedItems/microsoft.graph.servicePrincipal"
TAKEN = "Another object with the same value for property uniqueName already exists."


def create(graph: Graph, unique: str, **body):
    return graph("POST", "/applications", {"displayName": unique, "uniqueName": unique, **body})


def test_a_deleted_application_keeps_its_name_until_it_is_permanently_deleted(graph):
    app, sp = graph.app_with_sp("soft-one", {"identifierUris": ["api://soft-one"]})
    assert graph("DELETE", f"/applications/{app['id']}").status_code == 204
    assert graph("GET", f"/applications/{app['id']}").status_code == 404

    listed = graph("GET", DELETED_APPS).json()
    assert listed["@odata.context"].endswith("$metadata#directory/deletedItems/microsoft.graph.application")
    [deleted] = [a for a in listed["value"] if a["id"] == app["id"]]
    assert deleted["uniqueName"] == "soft-one" and deleted["deletedDateTime"]
    # Deleting an application deletes its service principal too; both wait in deleted items.
    assert [s["id"] for s in graph("GET", DELETED_SPS).json()["value"]] == [sp["id"]]

    for attempt in (create(graph, "soft-one"), graph.upsert("soft-one")):
        assert attempt.status_code == 400, attempt.text
        assert attempt.json()["error"]["code"] == "Request_BadRequest"
        assert attempt.json()["error"]["message"] == TAKEN
    other_uri = create(graph, "soft-two", identifierUris=["api://soft-one"])
    assert other_uri.status_code == 400 and "identifierUris" in other_uri.json()["error"]["message"]

    item = graph("GET", f"/directory/deletedItems/{app['id']}").json()
    assert item["@odata.type"] == "#microsoft.graph.application" and item["uniqueName"] == "soft-one"
    assert graph("DELETE", f"/directory/deletedItems/{app['id']}").status_code == 204
    assert graph("GET", f"/directory/deletedItems/{app['id']}").status_code == 404
    assert graph("DELETE", f"/directory/deletedItems/{app['id']}").status_code == 404
    assert create(graph, "soft-one").status_code == 201


def test_restore_brings_the_application_back_without_its_service_principal(graph):
    app, sp = graph.app_with_sp("restored")
    graph("DELETE", f"/applications/{app['id']}")
    r = graph("POST", f"/directory/deletedItems/{app['id']}/restore")
    assert r.status_code == 200, r.text
    assert r.json()["@odata.type"] == "#microsoft.graph.application" and r.json()["deletedDateTime"] is None
    assert graph("GET", "/applications(uniqueName='restored')").json()["id"] == app["id"]
    assert graph("GET", f"/servicePrincipals/{sp['id']}").status_code == 404
    assert graph("POST", f"/directory/deletedItems/{sp['id']}/restore").status_code == 200
    assert graph("GET", f"/servicePrincipals/{sp['id']}").status_code == 200


def test_deleted_items_are_purged_after_30_days_of_the_tenant_clock(lt, http, graph):
    app = create(graph, "thirty-days").json()
    graph("DELETE", f"/applications/{app['id']}")
    lt.advance_clock(29 * 86400)
    graph = Graph(lt, http)  # a token of the tenant's new day
    assert create(graph, "thirty-days").status_code == 400
    lt.advance_clock(86400)
    graph = Graph(lt, http)
    assert [a for a in graph("GET", DELETED_APPS).json()["value"] if a["id"] == app["id"]] == []
    assert create(graph, "thirty-days").status_code == 201


def test_permanent_delete_needs_ownership_with_owned_by_and_listing_needs_read_all(lt, http, graph):
    app = create(graph, "not-yours").json()
    graph("DELETE", f"/applications/{app['id']}")
    caller = lt.seed.admin_client  # holds no Graph role at all
    token = client_token(lt, http, caller.app_id, caller.secret, "https://graph.microsoft.com/.default")
    stranger = Graph(lt, http, token.json()["access_token"])
    assert stranger("DELETE", f"/directory/deletedItems/{app['id']}").status_code == 403
    assert stranger("GET", DELETED_APPS).status_code == 403
    assert graph("DELETE", f"/directory/deletedItems/{app['id']}").status_code == 204


def test_the_object_quota_counts_deleted_objects_and_a_quarter_of_purged_ones(lt, http, graph):
    assert lt.set_settings({"directoryObjectQuota": 4})["directoryObjectQuota"] == 4
    graph.app_with_sp("quota-a")
    second = create(graph, "quota-b").json()
    third = create(graph, "quota-c").json()
    refused = create(graph, "quota-d")
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "Directory_QuotaExceeded"
    assert refused.json()["error"]["message"].startswith(
        "The directory object quota limit for the Principal has been exceeded")
    refused_sp = graph("POST", "/servicePrincipals", {"appId": second["appId"]})
    assert refused_sp.json()["error"]["code"] == "Directory_QuotaExceeded"

    # Deleting is not enough: deleted items count in full.
    graph("DELETE", f"/applications/{third['id']}")
    assert create(graph, "quota-d").status_code == 400
    # A permanently deleted object still weighs a quarter of one for 30 days: 3.25 + 1 does not fit in 4 ...
    graph("DELETE", f"/directory/deletedItems/{third['id']}")
    assert create(graph, "quota-d").status_code == 400
    # ... and 2.5 + 1 does.
    graph("DELETE", f"/applications/{second['id']}")
    graph("DELETE", f"/directory/deletedItems/{second['id']}")
    assert create(graph, "quota-d").status_code == 201
    assert create(graph, "quota-e").status_code == 400
    lt.advance_clock(30 * 86400)  # the quarters weigh nothing after 30 days
    graph = Graph(lt, http)
    assert create(graph, "quota-e").status_code == 201


def test_directory_settings_refuse_what_they_do_not_know(lt, http):
    url = f"{lt.authority_host}/_admin/settings"
    assert http.put(url, json={"directoryObjectQuota": "many"}).status_code == 400
    assert http.put(url, json={"objectQuota": 5}).status_code == 400
    assert http.put(url, json={"directoryObjectQuota": None}).json()["directoryObjectQuota"] is None
    assert http.put(url, json={"accessTokenLifetimeSeconds": 0}).status_code == 400
    assert http.put(url, json={"accessTokenLifetimeSeconds": True}).status_code == 400
    lt.reset()
    assert http.get(url).json()["directoryObjectQuota"] == 250
    assert http.get(url).json()["accessTokenLifetimeSeconds"] == 3600
