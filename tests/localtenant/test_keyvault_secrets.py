"""Key Vault secrets with unmodified SecretClient and azure-identity credentials over the challenge flow."""
from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from localtenant_helpers import client_token


def _client(lt, credential) -> SecretClient:
    return SecretClient(lt.vault_url, credential, verify_challenge_resource=False, connection_verify=lt.ca_file)


@pytest.fixture
def product_client(lt, monkeypatch) -> SecretClient:
    monkeypatch.setenv("IDENTITY_ENDPOINT", lt.identity_endpoint)
    monkeypatch.setenv("IDENTITY_HEADER", lt.identity_header)
    return _client(lt, ManagedIdentityCredential())


def _poll(poller):
    poller.polling_method()._polling_interval = 0  # local: no need to wait between polls
    return poller.result()


def test_round_trip(product_client):
    c = product_client
    s1 = c.set_secret("app--one--secret", "v1", tags={"registration": "one"}, content_type="text/plain")
    assert s1.value == "v1" and s1.properties.tags == {"registration": "one"}
    s2 = c.set_secret("app--one--secret", "v2")
    assert c.get_secret("app--one--secret").value == "v2"
    assert c.get_secret("app--one--secret", s1.properties.version).value == "v1"
    assert {p.version for p in c.list_properties_of_secret_versions("app--one--secret")} == \
        {s1.properties.version, s2.properties.version}
    assert "app--one--secret" in {p.name for p in c.list_properties_of_secrets()}
    deleted = _poll(c.begin_delete_secret("app--one--secret"))
    assert deleted.recovery_id.endswith("/deletedsecrets/app--one--secret")
    with pytest.raises(ResourceNotFoundError):
        c.get_secret("app--one--secret")
    with pytest.raises(ResourceExistsError):  # 409: deleted but recoverable
        c.set_secret("app--one--secret", "v3")
    _poll(c.begin_recover_deleted_secret("app--one--secret"))
    assert c.get_secret("app--one--secret").value == "v2"
    _poll(c.begin_delete_secret("app--one--secret"))
    c.purge_deleted_secret("app--one--secret")
    c.set_secret("app--one--secret", "fresh")


def test_paging_and_attributes(product_client):
    for i in range(30):
        product_client.set_secret(f"s-{i:02d}", "x")
    assert len(list(product_client.list_properties_of_secrets(max_page_size=7))) == 30
    p = product_client.update_secret_properties("s-01", enabled=False)
    assert p.enabled is False
    with pytest.raises(HttpResponseError) as e:
        product_client.get_secret("s-01")
    assert e.value.status_code == 403


def test_invalid_name(product_client):
    with pytest.raises(HttpResponseError) as e:
        product_client.set_secret("bad_name", "x")
    assert e.value.status_code == 400 and e.value.error.code == "BadParameter"


def test_rbac_on_secret_scope(lt, http, product_client):
    product_client.set_secret("shared", "s")
    product_client.set_secret("private", "p")
    reader = lt.seed.reader_client
    cred = ClientSecretCredential(lt.tenant_id, reader.app_id, reader.secret, authority=lt.authority_host,
                                  disable_instance_discovery=True, connection_verify=lt.ca_file)
    c = _client(lt, cred)
    with pytest.raises(HttpResponseError) as e:
        c.get_secret("shared")
    assert e.value.status_code == 403 and e.value.error.code == "Forbidden"
    _grant(lt, http, f"{lt.seed.vault_resource_id}/secrets/shared", reader.object_id,
           "4633458b-17de-408a-b874-0445c86b69e6")
    assert c.get_secret("shared").value == "s"
    with pytest.raises(HttpResponseError):
        c.get_secret("private")


def test_challenge_without_token(lt, http):
    r = http.get(f"{lt.vault_url}/secrets/x", params={"api-version": "7.5"})
    assert r.status_code == 401
    assert r.headers["WWW-Authenticate"] == (f'Bearer authorization="{lt.authority}", '
                                             'resource="https://vault.azure.net"')


def test_expired_cae_token_gets_claims_challenge_and_sdk_recovers(lt, http, product_client):
    product_client.set_secret("cae", "1")
    admin = lt.seed.admin_client
    _grant(lt, http, lt.seed.vault_resource_id, admin.object_id, "b86a8fe4-44ce-4948-aee5-eccb2c155cd7")
    cred = ClientSecretCredential(lt.tenant_id, admin.app_id, admin.secret, authority=lt.authority_host,
                                  disable_instance_discovery=True, connection_verify=lt.ca_file)
    c = _client(lt, cred)
    assert c.get_secret("cae").value == "1"
    lt.advance_clock(7200)  # the SDK's cached token is now expired on the tenant's clock
    assert c.get_secret("cae").value == "1"


def _grant(lt, http, scope, principal, role):
    arm_token = _mi(lt, http, "https://management.azure.com/")
    r = http.put(f"{lt.arm_endpoint}{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
                 params={"api-version": "2022-04-01"}, headers={"Authorization": f"Bearer {arm_token}"},
                 json={"properties": {"roleDefinitionId": "/subscriptions/x/providers/Microsoft.Authorization/"
                                      f"roleDefinitions/{role}",
                                      "principalId": principal, "principalType": "ServicePrincipal"}})
    assert r.status_code == 201, r.text


def _mi(lt, http, resource):
    from localtenant_helpers import mi_token
    return mi_token(lt, http, resource)


def test_unknown_api_version(lt, http):
    seed = lt.seed.admin_client
    token = client_token(lt, http, seed.app_id, seed.secret, "https://vault.azure.net/.default").json()
    r = http.get(f"{lt.vault_url}/secrets", params={"api-version": "1.0"},
                 headers={"Authorization": f"Bearer {token['access_token']}"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "BadParameter"
