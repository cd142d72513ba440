"""Entra keeps a deleted application in deleted items for 30 days, its uniqueName taken, and counts it against
the 250 directory objects its creator may make (the local tenant does too: docs/local-tenant.md). So the API
deletes for good, reuses a name it once held, and refuses a create that cannot fit before writing anything.

These run against a tenant of their own, so the objects other tests made do not count against the quota."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest

from localtenant import LocalTenant
from tests.support import CAPTURED, PROBLEM_TYPE_BASE, api_client, api_token, settings_override


@pytest.fixture(scope="module")
def own_tenant(host) -> Iterator[LocalTenant]:
    with LocalTenant.start() as lt, settings_override(**lt.app_settings()):
        yield lt


@pytest.fixture
def tenant_api(own_tenant, host) -> Iterator[tuple[LocalTenant, httpx.Client]]:
    own_tenant.reset()
    with api_client(host, api_token(own_tenant, own_tenant.seed.admin_client)) as client:
        yield own_tenant, client


def body(name: str) -> dict:
    return {"type": "service", "name": name, "displayName": f"Quota {name}", "dicomService": "managed",
            "access": "reader"}


def held(lt: LocalTenant, name: str) -> list[dict]:
    """Everything in the directory, live or deleted, that holds this registration's uniqueName."""
    state = lt.state()
    return [a for a in state["applications"] + state["deletedItems"] if a.get("uniqueName") == f"dicomreg-{name}"]


def test_create_delete_create_of_one_name_answers_201_both_times(tenant_api):
    lt, api = tenant_api
    assert api.post("/registrations", json=body("again")).status_code == 201
    removed = api.delete("/registrations/again")
    assert removed.status_code == 200, removed.text
    assert {r["kind"] for r in removed.json()["removed"]} >= {"application", "servicePrincipal"}
    assert held(lt, "again") == [] and lt.state()["deletedItems"] == []  # gone for good, name and quota free
    second = api.post("/registrations", json=body("again"))
    assert second.status_code == 201, second.text


def test_a_rolled_back_create_retried_answers_201(tenant_api):
    lt, api = tenant_api
    lt.set_faults({"failures": [{"operation": "graph.createServicePrincipal", "nth": 1, "status": 400}]})
    failed = api.post("/registrations", json=body("rolled-back"))
    assert failed.status_code == 502, failed.text
    assert failed.json()["failedStep"] == "create service principal"
    assert "create application" in failed.json()["undoneSteps"]
    assert held(lt, "rolled-back") == []
    retried = api.post("/registrations", json=body("rolled-back"))
    assert retried.status_code == 201, retried.text


@pytest.mark.slow(24)
def test_a_name_held_by_a_deleted_registration_of_this_api_is_reused(tenant_api):
    """A teardown that stopped between the delete and the permanent delete leaves the application in deleted
    items: the next create of the name purges it and creates."""
    lt, api = tenant_api
    assert api.post("/registrations", json=body("half-gone")).status_code == 201
    # The service principal's permanent delete goes through, the application's is refused.
    lt.set_faults({"failures": [{"operation": "graph.permanentlyDeleteItem", "nth": 2, "status": 403}]})
    assert api.delete("/registrations/half-gone").status_code == 502
    lt.set_faults({})
    assert [a["deletedDateTime"] is not None for a in held(lt, "half-gone")] == [True]
    assert api.post("/registrations", json=body("half-gone")).status_code == 201
    assert [a["deletedDateTime"] for a in held(lt, "half-gone")] == [None]


def test_a_name_held_by_a_deleted_application_of_someone_else_is_a_clear_409(tenant_api):
    lt, api = tenant_api
    # An application without this API's tags holds the name from deleted items.
    token = httpx.get(lt.identity_endpoint, params={"api-version": "2019-08-01",
                                                    "resource": "https://graph.microsoft.com"},
                      headers={"X-IDENTITY-HEADER": lt.identity_header}, trust_env=False).json()["access_token"]
    with httpx.Client(base_url=f"{lt.graph_endpoint}/v1.0", verify=ssl.create_default_context(cafile=lt.ca_file),
                      trust_env=False,
                      headers={"Authorization": f"Bearer {token}"}) as graph:
        app = graph.post("/applications", json={"displayName": "not ours", "uniqueName": "dicomreg-taken"}).json()
        assert graph.delete(f"/applications/{app['id']}").status_code == 204
    response = api.post("/registrations", json=body("taken"))
    assert response.status_code == 409, response.text
    assert response.json()["type"] == PROBLEM_TYPE_BASE + "conflict"
    assert app["id"] in response.json()["detail"] and "permanently delete" in response.json()["detail"]
    assert [a["id"] for a in held(lt, "taken")] == [app["id"]]  # left as it was


def cycles(api: httpx.Client, count: int) -> None:
    for i in range(count):
        created = api.post("/registrations", json=body(f"cycle-{i % 3}"))
        assert created.status_code == 201, (i, created.text)
        assert api.delete(f"/registrations/cycle-{i % 3}").status_code == 200, i


def test_create_delete_cycles_never_reach_the_quota(tenant_api):
    """12 cycles of 2 objects under a quota of 20: each cycle would leave 2 objects in deleted items
    (24 > 20) if deletes were soft; purged, each weighs a quarter for 30 days (6)."""
    lt, api = tenant_api
    lt.set_settings({"directoryObjectQuota": 20})
    with settings_override(DIRECTORY_OBJECT_QUOTA="20"):
        cycles(api, 12)


@pytest.mark.slow(30)
def test_130_create_delete_cycles_under_the_default_quota(tenant_api):
    """The full-size run: 130 cycles would leave 260 objects in deleted items under Entra's 250."""
    lt, api = tenant_api
    cycles(api, 130)
    assert lt.settings()["directoryObjectQuota"] == 250


def test_a_create_past_the_quota_answers_the_documented_problem_without_a_graph_write(tenant_api):
    lt, api = tenant_api
    lt.set_settings({"directoryObjectQuota": 4})
    with settings_override(DIRECTORY_OBJECT_QUOTA="4"):
        for name in ("fits-1", "fits-2"):
            assert api.post("/registrations", json=body(name)).status_code == 201
        before = lt.stats()["calls"]
        refused = api.post("/registrations", json=body("does-not-fit"))
        after = lt.stats()["calls"]
        report = api.get("/reports/capacity").json()
    assert refused.status_code == 409, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == PROBLEM_TYPE_BASE + "quota-exceeded"
    assert problem["quota"]["limit"] == 4 and problem["quota"]["used"] == 4 and problem["needed"] == 2
    for advice in ("delete registrations", "permanently delete", "Application Administrator",
                   "DIRECTORY_OBJECT_QUOTA"):
        assert advice in problem["detail"]
    assert report == problem["quota"] == {
        "limit": 4, "used": 4, "owned": 4, "deleted": 0, "free": 0, "registrationsThatFit": 0}
    called = {op for op in after if after[op] != before.get(op)}
    assert called and all(op.split(".")[1].startswith(("get", "list")) for op in called if op.startswith("graph")), \
        called
    assert not {op for op in called if op.startswith(("keyvault", "arm"))}
    assert held(lt, "does-not-fit") == []
    # From 80 % on, every create logs where the quota stands.
    assert any("WARNING directory object quota: 4 of 4 used" in line for line in CAPTURED)


def test_graphs_own_quota_refusal_answers_the_same_problem(tenant_api):
    """The API cannot see the quarter weight of purged objects: when Graph refuses, the caller learns the same."""
    lt, api = tenant_api
    lt.set_settings({"directoryObjectQuota": 1})
    refused = api.post("/registrations", json=body("graph-says-no"))
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"] == PROBLEM_TYPE_BASE + "quota-exceeded"
    assert held(lt, "graph-says-no") == [] and lt.state()["deletedItems"] == []


def test_the_capacity_report_counts_owned_and_deleted_objects_for_admins_only(tenant_api, host):
    lt, api = tenant_api
    assert api.post("/registrations", json=body("counted")).status_code == 201
    # A teardown that stopped before its permanent deletes leaves both objects in deleted items.
    lt.set_faults({"failures": [{"operation": "graph.permanentlyDeleteItem", "nth": 1, "status": 403}]})
    assert api.delete("/registrations/counted").status_code == 502
    lt.set_faults({})
    report = api.get("/reports/capacity")
    assert report.status_code == 200, report.text
    assert report.json() == {"limit": 250, "used": 2, "owned": 1, "deleted": 1, "free": 248,
                             "registrationsThatFit": 124}
    reader = api_token(lt, lt.seed.reader_client)
    with api_client(host, reader) as as_reader:
        refused = as_reader.get("/reports/capacity")
    assert refused.status_code == 403 and refused.json()["requiredRoles"] == ["Registrations.Admin"]
