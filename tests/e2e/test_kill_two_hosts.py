"""kill -9 of one of two instances at a pinned step of a create, change, delete or rotation, then one sweep
and one retry on the other instance: nothing the API made is left in deleted items, no change is left
half-applied, no lease stays on a ready registration, nothing is orphaned.

A step is pinned by making its remote call fail (503) until the instance is killed: the instance is then
somewhere inside that step's retries, with everything before it done and the step itself not.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from bench._harness import HostProcess, admin_token
from localtenant import LocalTenant
from tests.support import settings_override, wait_for

PREFIX = "kill-"
READER, OWNER = "e89c7a3c-2f64-4fa1-a847-3e4c9ba4283a", "58a3b984-7adf-4c20-983a-32417c86fbc8"


@pytest.fixture(scope="module")
def tenant_and_survivor() -> Iterator[tuple]:
    with LocalTenant.start() as lt, HostProcess(lt) as survivor:
        yield lt, survivor


def client(host: HostProcess, token: str) -> httpx.Client:
    return httpx.Client(base_url=host.api, trust_env=False, timeout=120,
                        headers={"x-functions-key": host.function_key, "Authorization": f"Bearer {token}"})


def service(name: str, **extra) -> dict:
    return {"type": "service", "name": name, "displayName": "Before", "dicomService": "managed",
            "access": "reader", **extra}


def killed_at(lt, operation: str, nth: int, method: str, path: str, **request) -> None:
    """Send the request to a new instance, let it reach the `nth` call of `operation` (which fails until
    then), and kill -9 it there."""
    token = admin_token(lt)
    with HostProcess(lt, settings={"PROVISIONING_DEADLINE_SECONDS": "30"}) as victim:
        lt.set_faults({"failures": [{"operation": operation, "nth": nth, "status": 503, "times": None}]})
        before = lt.stats()["calls"].get(operation, 0)

        def send() -> None:
            try:
                with client(victim, token) as c:
                    c.request(method, path, **request)
            except httpx.HTTPError:
                pass  # the instance died under it

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        try:
            wait_for(lambda: lt.stats()["calls"].get(operation, 0) >= before + nth, 60, "the pinned step",
                     interval=0.05)
        finally:
            victim.proc.kill()  # SIGKILL: no undo, no finally of its own
            victim.proc.wait()
            lt.set_faults({})
        sender.join(timeout=30)


def sweep_later(lt) -> dict:
    """One sweep by a runtime whose clock stands two hours later (every lease of the dead instance has run
    out by then)."""
    with settings_override(**lt.app_settings()):
        from registrations import settings, sweep, wiring

        with wiring.use(wiring.build(settings.load(),
                                     clock=lambda: datetime.now(timezone.utc) + timedelta(hours=2))) as later:
            return sweep.run(later.service)


def assert_clean(lt, survivor: HostProcess) -> None:
    state = lt.state()
    rows = {r["RowKey"].removeprefix("reg:"): r for r in lt.registry_rows() if r["RowKey"].startswith("reg:")}
    ours = {a["id"]: a for a in state["applications"] if (a.get("uniqueName") or "").startswith(f"dicomreg-{PREFIX}")}
    # Nothing the API made sits in deleted items.
    deleted = [d for d in state["deletedItems"]
               if (d.get("uniqueName") or "").startswith(f"dicomreg-{PREFIX}") or "dicom-registration" in
               (d.get("tags") or [])]
    assert deleted == [], deleted
    # Every application of the API is a registry row and every row's application is there; no lease on a
    # ready registration, nothing still provisioning or deleting.
    kill_rows = {n: r for n, r in rows.items() if n.startswith(PREFIX)}
    assert {r["app_object_id"] for r in kill_rows.values()} == set(ours), (kill_rows, list(ours))
    assert all(r["state"] == "ready" and not r["lease_holder"] for r in kill_rows.values()), kill_rows
    # No orphan: a principal without its application, a role assignment without its principal, a secret
    # without its registration.
    app_ids = {a["appId"] for a in state["applications"]}
    assert [s for s in state["servicePrincipals"] if "dicom-registration" in (s.get("tags") or [])
            and s["appId"] not in app_ids] == []
    principals = {s["id"] for s in state["servicePrincipals"]} | {u["id"] for u in state["users"]} | \
        {g["id"] for g in state["groups"]}
    assert [r for r in state["roleAssignments"] if r["properties"]["principalId"] not in principals] == []
    secrets = [s["name"] for s in state["secrets"] if s["name"].startswith(f"dicomreg--{PREFIX}") and not s["deleted"]]
    assert sorted(secrets) == sorted(f"dicomreg--{n}--secret" for n in kill_rows), secrets
    # No half-applied change: Entra holds what the registry recorded, and only that.
    with client(survivor, admin_token(lt)) as c:
        for name, row in kill_rows.items():
            got = c.get(f"/registrations/{name}", params={"drift": "live"})
            assert got.status_code == 200 and got.json()["drift"] == [], (name, got.text)
            app = ours[row["app_object_id"]]
            recorded = json.loads(row["tags"])
            access = next(t.split(":", 1)[1] for t in recorded if t.startswith("dicom-access:"))
            roles = sorted(r["properties"]["roleDefinitionId"].rsplit("/", 1)[-1] for r in state["roleAssignments"]
                           if r["properties"]["principalId"] == row["sp_id"])
            assert roles == [{"reader": READER, "writer": OWNER}[access]], (name, roles)
            assert (app["displayName"], access) in (("Before", "reader"), ("After", "writer")), (name, app)


def made_then_killed(lt, survivor: HostProcess, name: str, operation: str, nth: int, method: str, path: str,
                     **request) -> None:
    """A registration made on the survivor; the request killed at the pinned step on another instance; then
    the sweep, and the invariants."""
    with client(survivor, admin_token(lt)) as c:
        assert c.post("/registrations", json=service(name)).status_code == 201
    killed_at(lt, operation, nth, method, path, **request)
    sweep_later(lt)
    assert_clean(lt, survivor)


CREATE_STEPS = [("graph.createApplication", 1), ("graph.createServicePrincipal", 1),
                ("arm.createRoleAssignment", 1), ("keyvault.setSecret", 1)]


@pytest.mark.parametrize("operation,nth", CREATE_STEPS, ids=[f"{o}-{n}" for o, n in CREATE_STEPS])
def test_a_create_killed_at_any_step(tenant_and_survivor, operation, nth):
    lt, survivor = tenant_and_survivor
    name = f"{PREFIX}create-{operation.split('.')[1].lower()}"
    killed_at(lt, operation, nth, "POST", "/registrations", json=service(name))
    sweep_later(lt)
    assert_clean(lt, survivor)
    with client(survivor, admin_token(lt)) as c:  # the caller's retry makes (or replays) the registration
        retried = c.post("/registrations", json=service(name))
        assert retried.status_code in (200, 201), retried.text
    assert_clean(lt, survivor)


CHANGE_STEPS = [("graph.updateApplication", 1), ("arm.createRoleAssignment", 1), ("arm.deleteRoleAssignment", 1),
                ("graph.updateApplication", 2)]


@pytest.mark.parametrize("operation,nth", CHANGE_STEPS, ids=[f"{o}-{n}" for o, n in CHANGE_STEPS])
def test_a_change_killed_at_any_step(tenant_and_survivor, operation, nth):
    lt, survivor = tenant_and_survivor
    name = f"{PREFIX}change-{operation.split('.')[1].lower()}-{nth}"
    made_then_killed(lt, survivor, name, operation, nth, "PATCH", f"/registrations/{name}",
                     content=json.dumps({"displayName": "After", "access": "writer"}),
                     headers={"Content-Type": "application/merge-patch+json"})
    with client(survivor, admin_token(lt)) as c:
        retried = c.patch(f"/registrations/{name}", content=json.dumps({"displayName": "After", "access": "writer"}),
                          headers={"Content-Type": "application/merge-patch+json"})
        assert retried.status_code == 200, retried.text
    assert_clean(lt, survivor)


DELETE_STEPS = [("graph.deleteServicePrincipal", 1), ("graph.permanentlyDeleteItem", 1),
                ("graph.deleteApplication", 1), ("graph.permanentlyDeleteItem", 2)]


@pytest.mark.parametrize("operation,nth", DELETE_STEPS, ids=[f"{o}-{n}" for o, n in DELETE_STEPS])
def test_a_delete_killed_at_any_step(tenant_and_survivor, operation, nth):
    lt, survivor = tenant_and_survivor
    name = f"{PREFIX}delete-{operation.split('.')[1].lower()}-{nth}"
    made_then_killed(lt, survivor, name, operation, nth, "DELETE", f"/registrations/{name}")
    assert name not in {r["RowKey"].removeprefix("reg:") for r in lt.registry_rows()}
    with client(survivor, admin_token(lt)) as c:
        assert c.delete(f"/registrations/{name}").status_code == 404  # the retry finds it gone
    assert_clean(lt, survivor)


ROTATE_STEPS = [("graph.addPassword", 1), ("keyvault.setSecret", 1)]


@pytest.mark.parametrize("operation,nth", ROTATE_STEPS, ids=[f"{o}-{n}" for o, n in ROTATE_STEPS])
def test_a_rotation_killed_at_any_step(tenant_and_survivor, operation, nth):
    lt, survivor = tenant_and_survivor
    name = f"{PREFIX}rotate-{operation.split('.')[1].lower()}"
    made_then_killed(lt, survivor, name, operation, nth, "POST", f"/registrations/{name}/credentials",
                     headers={"Idempotency-Key": "r-1"})
    with client(survivor, admin_token(lt)) as c:
        retried = c.post(f"/registrations/{name}/credentials", headers={"Idempotency-Key": "r-1"})
        assert retried.status_code in (200, 201), retried.text
        creds = c.get(f"/registrations/{name}/credentials").json()["credentials"]
    assert [cr["state"] for cr in creds].count("unreachable") == 0, creds
    assert_clean(lt, survivor)
