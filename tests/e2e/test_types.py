"""One end-to-end test per registration type: create it over HTTP, then prove the returned configuration
works with msal and nothing else (the secret read back from Key Vault with SecretClient)."""

from __future__ import annotations

import pytest

from tests.support import (
    MANAGED_AUDIENCE, claims, confidential_app, create, follow_authorize, public_app, secret_client,
)


def read_secret(tenant, config: dict) -> str:
    reference = config["clientSecret"]
    assert reference["keyVaultSecretUri"].startswith(tenant.vault_url + "/secrets/")
    return secret_client(tenant).get_secret(reference["keyVaultSecretName"]).value


def test_service_client_on_managed_dicom_gets_a_token_and_an_azure_role(api, tenant):
    reg = create(api, {"type": "service", "name": "pacs-router", "displayName": "PACS router",
                       "dicomService": "managed", "access": "reader"})
    assert reg["state"] == "ready"
    assert "secretText" not in str(reg) and "value" not in reg["credential"]
    config = reg["config"]
    assert config["flow"] == "client_credentials"
    assert config["scopes"] == [f"{MANAGED_AUDIENCE}/.default"]
    assert config["dicomService"]["baseUrl"] == f"{tenant.dicom_url}/v2"
    assert config["tokenEndpoint"] == f"{tenant.authority}/oauth2/v2.0/token"

    secret = read_secret(tenant, config)
    result = confidential_app(tenant, config["clientId"], secret).acquire_token_for_client(config["scopes"])
    assert "access_token" in result, result
    token = claims(result["access_token"])
    assert token["aud"] == MANAGED_AUDIENCE
    assert token["appid"] == config["clientId"]

    # Data access on the managed service is Azure RBAC: DICOM Data Reader on the service, for this principal.
    assignments = [a for a in tenant.state()["roleAssignments"]
                   if a["properties"]["principalId"] == reg["servicePrincipalId"]]
    assert len(assignments) == 1
    assert assignments[0]["properties"]["roleDefinitionId"].endswith("e89c7a3c-2f64-4fa1-a847-3e4c9ba4283a")
    assert assignments[0]["properties"]["scope"].lower() == tenant.seed.dicom_resource_id.lower()


def test_resource_then_service_client_on_open_source_dicom_gets_app_role(api, tenant):
    # The open-source target's resource registration; other tests may have made it already (a replay).
    made = api.post("/registrations", json={"type": "resource", "name": "dicom-oss-api",
                                            "displayName": "DICOM OSS API", "dicomService": "oss"})
    assert made.status_code in (200, 201), made.text
    resource = made.json()
    server = resource["config"]["dicomServerSettings"]
    assert server["DicomServer__Security__Authentication__Audience"] == resource["appId"]
    assert server["DicomServer__Security__Authentication__Authority"] == f"{tenant.authority}/v2.0"
    # The default names the appId: a form every identifier URI restriction of an app management policy allows.
    assert resource["identifierUri"] == f"api://{tenant.tenant_id}/{resource['appId']}"

    reg = create(api, {"type": "service", "name": "ingest-job", "displayName": "Ingestion job",
                       "dicomService": "oss", "access": "writer"})
    config = reg["config"]
    secret = read_secret(tenant, config)
    result = confidential_app(tenant, config["clientId"], secret).acquire_token_for_client(config["scopes"])
    assert "access_token" in result, result
    token = claims(result["access_token"])
    assert token["aud"] == resource["appId"]
    assert token["roles"] == ["globalWriter"]
    assert token["ver"] == "2.0"


@pytest.mark.parametrize("platform,redirect,origin", [
    ("mobile", "http://localhost:8400/callback", None),
    ("spa", "https://viewer.example.org/auth", "https://viewer.example.org"),
])
def test_public_client_completes_authorization_code_with_pkce(api, tenant, platform, redirect, origin):
    reg = create(api, {"type": "public", "name": f"viewer-{platform}", "displayName": "Viewer",
                       "dicomService": "managed", "platform": platform, "redirectUris": [redirect],
                       "signInGroups": [tenant.seed.group.object_id]})  # the seeded user is its one member
    config = reg["config"]
    assert config["flow"] == "authorization_code_pkce" and "clientSecret" not in config
    assert reg["credential"] is None
    app = public_app(tenant, config["clientId"], origin=origin)
    flow = app.initiate_auth_code_flow(config["scopes"], redirect_uri=redirect)
    assert "code_challenge=" in flow["auth_uri"] and "code_challenge_method=S256" in flow["auth_uri"]
    result = app.acquire_token_by_auth_code_flow(flow, follow_authorize(tenant, flow["auth_uri"]))
    assert "access_token" in result, result
    token = claims(result["access_token"])
    assert token["aud"] == MANAGED_AUDIENCE
    assert "Dicom.ReadWrite" in token["scp"].split()
    assert token["oid"] == tenant.seed.user.object_id


def test_confidential_client_completes_authorization_code_and_refreshes(api, tenant):
    redirect = "https://portal.example.org/signin-oidc"
    reg = create(api, {"type": "confidential", "name": "imaging-portal", "displayName": "Imaging portal",
                       "dicomService": "managed", "redirectUris": [redirect], "notes": "CHG-1234",
                       "signInGroups": [tenant.seed.group.object_id]})
    config = reg["config"]
    assert config["flow"] == "authorization_code" and config["refreshTokens"] is True
    secret = read_secret(tenant, config)
    app = confidential_app(tenant, config["clientId"], secret)
    flow = app.initiate_auth_code_flow(config["scopes"], redirect_uri=redirect)
    result = app.acquire_token_by_auth_code_flow(flow, follow_authorize(tenant, flow["auth_uri"]))
    assert "access_token" in result, result
    assert result.get("refresh_token")
    assert claims(result["access_token"])["aud"] == MANAGED_AUDIENCE
    refreshed = app.acquire_token_by_refresh_token(result["refresh_token"], config["scopes"])
    assert "access_token" in refreshed, refreshed
