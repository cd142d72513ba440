"""A create that ended after it made its application but before it recorded the application's ids in the
registry (its instance died in between): the row holds the name, the desired state and the create's nonce, and
the application carries the nonce. A DELETE, a retry of the create and the sweep each find that application by
the nonce and finish what the create began, leaving nothing behind.

The state is what such a create leaves: a registration made as usual, then its row put back to what it held
before the ids were recorded (provisioning, no ids, its lease run out)."""

from __future__ import annotations

from azure.data.tables import TableClient, UpdateMode

PREFIX = "dicomreg-"


def service(name: str) -> dict:
    return {"type": "service", "name": name, "displayName": name, "dicomService": "managed", "access": "reader"}


def unrecord(tenant, name: str) -> None:
    """Put the registration's row back to what a create holds before it records the application."""
    with TableClient.from_connection_string(tenant.storage.connection_string(), tenant.registry_table) as table:
        row = dict(table.get_entity("registry", f"reg:{name}"))
        row.update(state="provisioning", app_object_id="", app_id="", sp_id="", lease_holder="dead-instance",
                   lease_until=1.0, credential="")
        table.update_entity(row, mode=UpdateMode.REPLACE)


def left_of(tenant, name: str, app_id: str, sp_id: str) -> dict[str, list]:
    state = tenant.state()
    return {
        "applications": [a["id"] for a in state["applications"] if a.get("uniqueName") == PREFIX + name],
        "servicePrincipals": [s["id"] for s in state["servicePrincipals"] if s["appId"] == app_id],
        "roleAssignments": [r["name"] for r in state["roleAssignments"] if r["properties"]["principalId"] == sp_id],
        "secrets": [s["name"] for s in state["secrets"] if s["name"] == f"{PREFIX}-{name}--secret"
                    and not s["deleted"]],
        "rows": [r["RowKey"] for r in tenant.registry_rows() if r["RowKey"] == f"reg:{name}"],
    }


def made(api, name: str) -> tuple[str, str]:
    created = api.post("/registrations", json=service(name))
    assert created.status_code == 201, created.text
    body = created.json()
    return body["appId"], body["servicePrincipalId"]


def test_a_delete_removes_what_a_create_made_before_it_recorded_the_application(api, tenant):
    """Breaks if the delete trusts only the recorded ids: the application, its principal, role and secret stay."""
    name = "unrecorded-delete"
    app_id, sp_id = made(api, name)
    unrecord(tenant, name)
    deleted = api.delete(f"/registrations/{name}")
    assert deleted.status_code == 200, deleted.text
    assert {"application", "servicePrincipal"} <= {r["kind"] for r in deleted.json()["removed"]}, deleted.text
    assert left_of(tenant, name, app_id, sp_id) == {k: [] for k in
                                                    ("applications", "servicePrincipals", "roleAssignments",
                                                     "secrets", "rows")}


def test_a_retried_create_resumes_the_application_it_made_before_recording_it(api, tenant):
    """The retry finds its own application by the nonce and finishes on it: one application, one principal,
    one password (the earlier one's value reached Key Vault, so it is kept), the registration ready."""
    name = "unrecorded-retry"
    app_id, sp_id = made(api, name)
    unrecord(tenant, name)
    retried = api.post("/registrations", json=service(name))
    assert retried.status_code in (200, 201), retried.text
    assert (retried.json()["appId"], retried.json()["servicePrincipalId"]) == (app_id, sp_id)
    apps = [a for a in tenant.state()["applications"] if a.get("uniqueName") == PREFIX + name]
    assert len(apps) == 1 and len(apps[0]["passwordCredentials"]) == 1, apps
    assert api.get(f"/registrations/{name}").json()["state"] == "ready"
    assert api.delete(f"/registrations/{name}").status_code == 200
    assert left_of(tenant, name, app_id, sp_id) == {k: [] for k in
                                                    ("applications", "servicePrincipals", "roleAssignments",
                                                     "secrets", "rows")}
