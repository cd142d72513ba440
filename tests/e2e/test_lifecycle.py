"""Reading, listing, configuration formats and deletion, through HTTP."""

from __future__ import annotations

import shlex

import pytest

from tests.support import create, secret_client


def service_body(name: str, **extra) -> dict:
    return {"type": "service", "name": name, "displayName": f"Service {name}", "dicomService": "managed",
            "access": "reader", **extra}


def test_get_returns_what_create_returned(api):
    created = create(api, service_body("lifecycle-get"))
    response = api.get("/registrations/lifecycle-get")
    assert response.status_code == 200
    got = response.json()
    for field in ("appId", "objectId", "servicePrincipalId", "type", "access", "dicomService", "state"):
        assert got[field] == created[field], field
    assert got["config"]["clientSecret"] == created["config"]["clientSecret"]
    assert got["credential"]["keyId"] == created["credential"]["keyId"]


def test_location_header_points_at_the_registration(api):
    response = api.post("/registrations", json=service_body("lifecycle-location"))
    assert response.status_code == 201
    location = response.headers["location"]
    assert location.endswith("/api/registrations/lifecycle-location")
    assert api.get(location).status_code == 200


def test_config_formats(api, tenant):
    create(api, service_body("lifecycle-config"))
    env = api.get("/registrations/lifecycle-config/config/env")
    assert env.status_code == 200 and env.headers["content-type"].startswith("text/plain")
    pairs = dict(line.split("=", 1) for line in env.text.splitlines())
    assert shlex.split(pairs["DICOM_SCOPES"]) == ["https://dicom.healthcareapis.azure.com/.default"]
    assert pairs["DICOM_TENANT_ID"] == tenant.tenant_id
    assert pairs["DICOM_CLIENT_SECRET_KEYVAULT_URI"].startswith(tenant.vault_url)

    msal_config = api.get("/registrations/lifecycle-config/config/msal").json()
    assert msal_config["application"] == "ConfidentialClientApplication"
    assert msal_config["kwargs"]["authority"] == tenant.authority
    assert msal_config["acquire"] == "acquire_token_for_client"

    bad = api.get("/registrations/lifecycle-config/config/yaml")
    assert bad.status_code == 422 and bad.headers["content-type"] == "application/problem+json"


def test_list_filters_by_type_and_target_and_pages(api):
    for index in range(3):
        create(api, service_body(f"lifecycle-list-{index}"))
    create(api, {"type": "public", "name": "lifecycle-list-spa", "displayName": "SPA", "dicomService": "managed",
                 "platform": "spa", "redirectUris": ["https://spa.example.org/"]})
    # Every page: the session's tenant holds more registrations than one page as other tests add theirs.
    services, url, params = [], "/registrations", {"type": "service"}
    while url:
        page = api.get(url, params=params).json()
        services += page["value"]
        url, params = page.get("nextLink"), None
    assert {"lifecycle-list-0", "lifecycle-list-1", "lifecycle-list-2"} <= {r["name"] for r in services}
    assert all(r["type"] == "service" for r in services)
    publics = api.get("/registrations", params={"type": "public", "dicomService": "managed"}).json()["value"]
    assert "lifecycle-list-spa" in {r["name"] for r in publics}

    seen, url, params = [], "/registrations", {"type": "service", "top": "2"}
    while url:
        page = api.get(url, params=params).json()
        assert len(page["value"]) <= 2
        seen += [r["name"] for r in page["value"]]
        url, params = page.get("nextLink"), None
    assert seen == sorted(set(seen)) and {"lifecycle-list-0", "lifecycle-list-2"} <= set(seen)


def test_delete_removes_everything_and_says_what(api, tenant):
    reg = create(api, service_body("lifecycle-delete"))
    response = api.delete("/registrations/lifecycle-delete")
    assert response.status_code == 200, response.text
    removed = {item["kind"] for item in response.json()["removed"]}
    assert removed == {"application", "servicePrincipal", "roleAssignment", "keyVaultSecret"}

    state = tenant.state()
    assert reg["appId"] not in {a["appId"] for a in state["applications"]}
    assert reg["servicePrincipalId"] not in {s["id"] for s in state["servicePrincipals"]}
    assert not [a for a in state["roleAssignments"]
                if a["properties"]["principalId"] == reg["servicePrincipalId"]]
    deleted = secret_client(tenant).get_deleted_secret(reg["credential"]["keyVaultSecretName"])
    assert deleted.recovery_id  # soft-deleted, recoverable

    assert api.get("/registrations/lifecycle-delete").status_code == 404
    assert api.delete("/registrations/lifecycle-delete").status_code == 404


def test_recreate_after_delete_reuses_the_soft_deleted_secret_name(api, tenant):
    create(api, service_body("lifecycle-again"))
    assert api.delete("/registrations/lifecycle-again").status_code == 200
    again = create(api, service_body("lifecycle-again"))
    assert again["state"] == "ready"
    value = secret_client(tenant).get_secret(again["credential"]["keyVaultSecretName"])
    assert value.properties.tags["appId"] == again["appId"]


def test_a_resource_registration_in_use_cannot_be_deleted(api):
    resource = api.post("/registrations", json={"type": "resource", "name": "dicom-oss-api",
                                                "displayName": "DICOM OSS API", "dicomService": "oss"})
    assert resource.status_code in (200, 201), resource.text
    create(api, {"type": "service", "name": "oss-dependent", "displayName": "Dependent", "dicomService": "oss",
                 "access": "reader"})
    refused = api.delete("/registrations/dicom-oss-api")
    assert refused.status_code == 409
    assert "oss-dependent" in refused.json()["dependents"]
    assert api.delete("/registrations/oss-dependent").status_code == 200
    assert api.get("/registrations/dicom-oss-api").status_code == 200


@pytest.mark.slow(30)
def test_a_registration_deleted_right_after_its_create_is_gone_under_replication_delay(api, tenant):
    """Entra takes seconds to show a new service principal everywhere (make run's tenant: 3 s). A DELETE right
    after the create listed the new principal's app role assignments, got that lag's 404 and answered 502."""
    bodies = [service_body("lifecycle-quick-managed"),
              {"type": "public", "name": "lifecycle-quick-spa", "displayName": "SPA", "dicomService": "managed",
               "platform": "spa", "redirectUris": ["https://viewer.example.org/cb"]}]
    for body in bodies:
        tenant.set_faults({"replicationDelayMs": 3000})
        try:
            created = api.post("/registrations", json=body)
            assert created.status_code == 201, created.text
            deleted = api.delete(f"/registrations/{body['name']}")
        finally:
            tenant.set_faults({})
        assert deleted.status_code == 200, deleted.text
        assert api.get(f"/registrations/{body['name']}").status_code == 404
        state = tenant.state()  # nothing left behind: no principal, no role assignment naming it
        principal = created.json()["servicePrincipalId"]
        assert principal not in {s["id"] for s in state["servicePrincipals"]}
        assert not [a for a in state["roleAssignments"] if a["properties"]["principalId"] == principal]
        assert api.post("/registrations", json=body).status_code == 201  # the name came back at once
        assert api.delete(f"/registrations/{body['name']}").status_code == 200
