"""Issue 21's attacks, tried as an attacker would with permissions a tenant commonly hands out: the API trusts
only what its registry recorded, never what an application carries (uniqueName, tags, owners)."""

from __future__ import annotations

import httpx
from azure.identity import ManagedIdentityCredential

from tests.support import ca_context, user_graph_token

GRAPH = "https://graph.microsoft.com/.default"
DICOM_DATA_READER = "e89c7a3c-2f64-4fa1-a847-3e4c9ba4283a"


def graph_as(tenant, token: str) -> httpx.Client:
    return httpx.Client(base_url=f"{tenant.graph_endpoint}/v1.0", verify=ca_context(tenant.ca_file), trust_env=False,
                        headers={"Authorization": f"Bearer {token}"})


def service(name: str) -> dict:
    return {"type": "service", "name": name, "displayName": name, "dicomService": "managed", "access": "reader"}


def dicom_roles(tenant, sp_id: str) -> list[str]:
    return sorted(a["properties"]["roleDefinitionId"].rsplit("/", 1)[-1] for a in tenant.state()["roleAssignments"]
                  if a["properties"]["principalId"] == sp_id)


def test_a_pre_squatted_name_is_a_409_naming_the_holder_and_nothing_is_written_to_it(api, tenant):
    """A member user registers {prefix}-{name} with provisioning-looking tags and adds the API's identity as a
    co-owner; the administrator's create of {name} must not take it for an interrupted create of its own."""
    product = tenant.seed.product.object_id
    admin = tenant.seed.admin_client.object_id
    with graph_as(tenant, user_graph_token(tenant, tenant.seed.member.upn)) as member:
        made = member.post("/applications", json={
            "displayName": "squatted", "uniqueName": "dicomreg-squatted",
            "tags": ["dicom-registration", "dicom-type:service", "dicom-target:managed",
                     f"dicom-requester:{admin}", "dicom-access:reader", "dicom-credential:secret",
                     "dicom-state:provisioning", "dicom-lease:0123456789ab:1"]})
        assert made.status_code == 201, made.text
        squat = made.json()
        added = member.post(f"/applications/{squat['id']}/owners/$ref",
                            json={"@odata.id": f"{tenant.graph_endpoint}/v1.0/directoryObjects/{product}"})
        assert added.status_code == 204, added.text
    before = next(a for a in tenant.state()["applications"] if a["id"] == squat["id"])

    response = api.post("/registrations", json=service("squatted"))

    assert response.status_code == 409, response.text
    problem = response.json()
    assert squat["id"] in problem["detail"] and problem["holder"]["appId"] == squat["appId"]
    state = tenant.state()
    after = next(a for a in state["applications"] if a["id"] == squat["id"])
    assert after == before  # no tag, password or field written
    assert not [sp for sp in state["servicePrincipals"] if sp["appId"] == squat["appId"]]
    assert not [s for s in state.get("secrets", {}) if "squatted" in str(s)]
    assert not [r for r in tenant.registry_rows() if "squatted" in r["RowKey"]]
    assert api.get("/registrations/squatted").status_code == 404


def test_a_forged_sp_tag_has_no_effect_on_another_registration(api, tenant):
    """An owner of one registration points its dicom-sp tag at another registration's service principal
    (an owner may write tags); a PUT of the first and the sweep must leave the victim exactly as it was."""
    from registrations import sweep, wiring

    victim = api.post("/registrations", json=service("forge-victim"))
    attacker = api.post("/registrations", json=service("forge-attacker"))
    assert victim.status_code == 201 and attacker.status_code == 201, (victim.text, attacker.text)
    victim, attacker = victim.json(), attacker.json()
    identity = ManagedIdentityCredential().get_token(GRAPH).token  # an owner of both: writes what owners may
    with graph_as(tenant, identity) as graph:
        app = graph.get(f"/applications/{attacker['objectId']}").json()
        forged = [t for t in app["tags"] if not t.startswith("dicom-sp:")] + [f"dicom-sp:{victim['servicePrincipalId']}"]
        assert graph.patch(f"/applications/{attacker['objectId']}", json={"tags": forged}).status_code == 204
        victim_owners = graph.get(f"/servicePrincipals/{victim['servicePrincipalId']}/owners").json()["value"]
    assert dicom_roles(tenant, victim["servicePrincipalId"]) == [DICOM_DATA_READER]

    seen = api.get("/registrations/forge-attacker", params={"drift": "live"}).json()
    assert seen["servicePrincipalId"] == attacker["servicePrincipalId"] and seen["drift"] == []
    repaired = api.put("/registrations/forge-attacker", json={**service("forge-attacker"), "access": "writer"})
    assert repaired.status_code == 200, repaired.text
    report = sweep.run(wiring.runtime().service)

    assert dicom_roles(tenant, victim["servicePrincipalId"]) == [DICOM_DATA_READER]
    assert not [r for r in report["repaired"] if r.get("registration") == "forge-victim"], report
    with graph_as(tenant, identity) as graph:
        assert graph.get(f"/servicePrincipals/{victim['servicePrincipalId']}/owners").json()["value"] == victim_owners
    assert api.get("/registrations/forge-victim", params={"drift": "live"}).json()["drift"] == []
    # The attacker's own registration changed its own principal's role, nobody else's.
    assert len(dicom_roles(tenant, attacker["servicePrincipalId"])) == 1
    assert dicom_roles(tenant, attacker["servicePrincipalId"]) != [DICOM_DATA_READER]
    for name in ("forge-victim", "forge-attacker"):  # the session's object quota is shared
        assert api.delete(f"/registrations/{name}").status_code == 200
