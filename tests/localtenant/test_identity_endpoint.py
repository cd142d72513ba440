"""The App Service managed identity endpoint with unmodified azure-identity."""
from __future__ import annotations

import pytest
from azure.identity import ManagedIdentityCredential

from localtenant_helpers import claims


def test_managed_identity_credential_gets_a_graph_token(lt, monkeypatch):
    monkeypatch.setenv("IDENTITY_ENDPOINT", lt.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", lt.identity_header)
    token = ManagedIdentityCredential().get_token("https://graph.microsoft.com/.default")
    c = claims(token.token)
    assert c["aud"] == "https://graph.microsoft.com" and c["oid"] == lt.seed.product.object_id
    assert c["appid"] == lt.seed.product.app_id
    assert set(c["roles"]) == {"Application.ReadWrite.OwnedBy", "Application.Read.All",
                               "AppRoleAssignment.ReadWrite.All", "DelegatedPermissionGrant.ReadWrite.All",
                               "Directory.Read.All", "Policy.Read.All"}


def test_response_shape(lt, http):
    r = http.get(lt.identity_endpoint, params={"api-version": "2019-08-01", "resource": "https://vault.azure.net"},
                 headers={"X-IDENTITY-HEADER": lt.identity_header})
    body = r.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert isinstance(body["expires_on"], str) and body["expires_on"].isdigit()
    assert body["resource"] == "https://vault.azure.net" and body["client_id"] == lt.seed.product.app_id


@pytest.mark.parametrize("header, resource, status", [
    ("wrong", "https://vault.azure.net", 401), (None, "https://nobody.example", 400)])
def test_errors(lt, http, header, resource, status):
    r = http.get(lt.identity_endpoint, params={"api-version": "2019-08-01", "resource": resource},
                 headers={"X-IDENTITY-HEADER": header or lt.identity_header})
    assert r.status_code == status and r.json()["statusCode"] == status
