"""Reads come from the registry: a GET reads Entra only for what it shows live, a list reads no more of
Azure however many registrations there are."""

from __future__ import annotations


def azure_calls(tenant) -> int:
    calls = tenant.stats()["calls"]
    return sum(n for op, n in calls.items() if op.split(".")[0] in ("graph", "arm", "keyvault"))


def service(name: str) -> dict:
    return {"type": "service", "name": name, "displayName": name, "dicomService": "managed", "access": "reader"}


def test_a_get_reads_the_application_once_and_live_drift_only_when_asked(api, tenant):
    assert api.post("/registrations", json=service("reads-get")).status_code == 201
    before = azure_calls(tenant)
    got = api.get("/registrations/reads-get")
    assert got.status_code == 200 and got.json()["drift"] == []
    assert azure_calls(tenant) - before == 1
    before = azure_calls(tenant)
    live = api.get("/registrations/reads-get", params={"drift": "live"})
    assert live.status_code == 200 and live.json()["drift"] == []
    assert azure_calls(tenant) - before > 1  # the role assignments (and readers) were read too
    assert api.get("/registrations/reads-get", params={"drift": "yes"}).status_code == 422
    assert api.delete("/registrations/reads-get").status_code == 200  # the session's object quota is shared


def test_a_list_and_the_expiring_report_cost_the_same_azure_calls_for_3_or_9_registrations(api, tenant):
    def cost(path: str, **params) -> int:
        before = azure_calls(tenant)
        answer = api.get(path, params=params)
        assert answer.status_code == 200, answer.text
        return azure_calls(tenant) - before

    def costs() -> tuple[int, int]:
        return cost("/registrations", top=100), cost("/reports/expiring", days=730)

    for i in range(3):
        assert api.post("/registrations", json=service(f"reads-list-{i}")).status_code == 201
    few = costs()
    report = api.get("/reports/expiring", params={"days": 730}).json()
    assert {f"reads-list-{i}" for i in range(3)} <= {item["name"] for item in report["value"]}
    for i in range(3, 9):
        assert api.post("/registrations", json=service(f"reads-list-{i}")).status_code == 201
    assert costs() == few and few[0] <= 1, few
    for i in range(9):  # the session's object quota is shared
        assert api.delete(f"/registrations/reads-list-{i}").status_code == 200
