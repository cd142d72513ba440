"""A request whose writes need a tenant-wide Graph permission the API's identity does not hold is refused up
front with a 422 naming it, and nothing is written: signInGroups without AppRoleAssignment.ReadWrite.All,
owners (with MANAGE_OWNERS) without Application.ReadWrite.All. Before, both were a 502 half way through."""

from __future__ import annotations

import ssl
from collections.abc import Iterator

import httpx
import pytest
from azure.identity import ManagedIdentityCredential

from tests.support import PROBLEM_TYPE_BASE, api_client, api_token, objects_named, service, settings_override

GRAPH = "https://graph.microsoft.com/.default"
ASSIGN_ROLES = "06b708a9-e830-4db3-a914-8e69da51d44f"  # AppRoleAssignment.ReadWrite.All (Graph permissions reference)


@pytest.fixture(scope="module")
def lacking(host) -> Iterator[tuple]:
    """A tenant of its own whose API identity gave up AppRoleAssignment.ReadWrite.All (and never held
    Application.ReadWrite.All), with MANAGE_OWNERS set as if it did."""
    from localtenant import LocalTenant

    with LocalTenant.start() as lt, settings_override(**lt.app_settings(), MANAGE_OWNERS="true"):
        graph_sp = lt.seed.first_party.graph.object_id
        token = ManagedIdentityCredential().get_token(GRAPH).token
        with httpx.Client(base_url=f"{lt.graph_endpoint}/v1.0", verify=ssl.create_default_context(cafile=lt.ca_file),
                          trust_env=False,
                          headers={"Authorization": f"Bearer {token}"}) as graph:
            held = graph.get(f"/servicePrincipals/{graph_sp}/appRoleAssignedTo").json()["value"]
            (mine,) = [a for a in held if a["principalId"] == lt.seed.product.object_id
                       and a["appRoleId"] == ASSIGN_ROLES]
            assert graph.delete(f"/servicePrincipals/{graph_sp}/appRoleAssignedTo/{mine['id']}").status_code == 204
        with api_client(host, api_token(lt, lt.seed.admin_client)) as api:
            yield lt, api


@pytest.mark.parametrize("body,permission", [
    ({"type": "confidential", "name": "perm-groups", "displayName": "Portal", "dicomService": "managed",
      "redirectUris": ["https://portal.example.org/cb"], "signInGroups": ["{group}"]},
     "AppRoleAssignment.ReadWrite.All"),
    (service("perm-owners", owners=["{user}"]), "Application.ReadWrite.All"),
])
def test_a_field_the_identity_cannot_write_is_refused_before_anything_is_written(lacking, body, permission):
    lt, api = lacking
    named = {"{group}": lt.seed.group.object_id, "{user}": lt.seed.user.object_id}
    body = {k: [named.get(v, v) for v in value] if isinstance(value, list) else value for k, value in body.items()}
    response = api.post("/registrations", json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["type"] == PROBLEM_TYPE_BASE + "validation"
    assert problem["missingPermission"] == permission and permission in problem["detail"]
    assert objects_named(lt, body["name"])["applications"] == []
    # Without the field the same request is served.
    field = "signInGroups" if "signInGroups" in body else "owners"
    served = api.post("/registrations", json={k: v for k, v in body.items() if k != field})
    assert served.status_code == 201, served.text
    assert api.delete(f"/registrations/{body['name']}").status_code == 200
