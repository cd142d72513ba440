"""The tenant's app management policy as the API meets it (a lifetime beyond it is a 422 naming the limit,
before anything is written; a lifetime nobody asked for is shortened to it, at create and at rotation), the
open-source server's roles.json returned with its resource registration, and refresh tokens in the config of
clients that sign users in."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta, timezone

from tests.support import (claims, confidential_app, create, follow_authorize, public_app, secret_client, service,
                           settings_override)


@contextlib.contextmanager
def password_policy(tenant, days: int):
    """The tenant's policy for the block. The API keeps the policy it read for five minutes: the block
    starts and ends with a new runtime, as a worker that had not read it yet (or whose copy ran out)."""
    tenant.set_app_management_policy({"isEnabled": True, "applicationRestrictions": {
        "passwordCredentials": [{"restrictionType": "passwordLifetime", "maxLifetime": f"P{days}D"}]}})
    try:
        with settings_override():
            yield
    finally:
        tenant.set_app_management_policy({"isEnabled": False, "applicationRestrictions": {}})


def _days_left(end: str) -> float:
    return (datetime.fromisoformat(end.replace("Z", "+00:00")) - datetime.now(timezone.utc)) / timedelta(days=1)


def test_a_lifetime_beyond_the_tenant_policy_is_a_422_naming_the_limit(api, tenant):
    with password_policy(tenant, 90):
        before = tenant.stats()["calls"]
        r = api.post("/registrations", json=service("policy-long", credential={"kind": "secret", "lifetimeDays": 180}))
        assert r.status_code == 422, r.text
        problem = r.json()
        assert problem["maxLifetimeDays"] == 90 and "90 days" in problem["detail"]
        assert problem["errors"][0]["loc"][-1] == "lifetimeDays"
        after = tenant.stats()["calls"]
        writes = [op for op, n in after.items() if n != before.get(op, 0) and op.split(".")[0] in (
            "graph", "keyvault", "arm") and not op.split(".")[1].startswith(("get", "list"))]
        assert writes == [], writes  # refused before anything was written
        assert not [a for a in tenant.state()["applications"] if a.get("uniqueName") == "dicomreg-policy-long"]

        # Within the limit: made as asked. Not asked: the default is shortened to the limit.
        asked = create(api, service("policy-60", credential={"kind": "secret", "lifetimeDays": 60}))
        assert 59 < _days_left(asked["credential"]["endDateTime"]) <= 60
        default = create(api, service("policy-default"))
        assert _days_left(default["credential"]["endDateTime"]) <= 90


def test_rotation_respects_a_policy_set_after_the_create(api, tenant):
    reg = create(api, service("policy-rotate", credential={"kind": "secret", "lifetimeDays": 120}))
    assert _days_left(reg["credential"]["endDateTime"]) > 100
    with password_policy(tenant, 30):
        r = api.post("/registrations/policy-rotate/credentials", headers={"Idempotency-Key": "policy-rotate-1"})
        assert r.status_code == 201, r.text
        newest = max(r.json()["credentials"], key=lambda c: c["startDateTime"] or "")
        assert _days_left(newest["endDateTime"]) <= 30
        value = secret_client(tenant).get_secret(reg["credential"]["keyVaultSecretName"])
        assert _days_left(value.properties.expires_on.isoformat()) <= 30


def test_changing_the_lifetime_beyond_the_tenant_policy_is_a_422(api, tenant):
    import json

    create(api, service("policy-change", credential={"kind": "secret", "lifetimeDays": 60}))
    with password_policy(tenant, 90):
        r = api.patch("/registrations/policy-change", content=json.dumps({"credential": {"lifetimeDays": 180}}),
                      headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 422 and r.json()["maxLifetimeDays"] == 90, r.text
        r = api.patch("/registrations/policy-change", content=json.dumps({"credential": {"lifetimeDays": 80}}),
                      headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 200, r.text


def test_without_policy_read_all_graphs_refusal_is_the_422(host):
    """An identity that may not read the policy: Graph's own refusal of the credential becomes the 422 (it
    cannot name the limit), the create is undone, and nothing of it is left."""
    import requests
    from azure.identity import ManagedIdentityCredential

    from localtenant import LocalTenant
    from tests.support import api_client, api_token

    with LocalTenant.start() as other, settings_override(**other.app_settings()):
        # Take Policy.Read.All away from the product's identity before it asks for its first token.
        graph = requests.Session()
        graph.trust_env, graph.verify = False, other.ca_file
        graph.headers["Authorization"] = "Bearer " + ManagedIdentityCredential().get_token(
            "https://graph.microsoft.com/.default").token
        first_party = other.seed.first_party.graph.object_id
        url = f"{other.graph_endpoint}/v1.0/servicePrincipals/{first_party}/appRoleAssignedTo"
        held = [a for a in graph.get(url).json()["value"] if a["principalId"] == other.seed.product.object_id
                and a["appRoleId"] == "246dd0d5-5bd0-4def-940b-0421030a5b68"]
        assert len(held) == 1 and graph.delete(f"{url}/{held[0]['id']}").status_code == 204
        with password_policy(other, 90), settings_override(), \
                api_client(host, api_token(other, other.seed.admin_client)) as api:
            r = api.post("/registrations", json=service("no-policy-read",
                                                        credential={"kind": "secret", "lifetimeDays": 180}))
            assert r.status_code == 422, r.text
            assert "Policy.Read.All" in r.json()["detail"] and "maxLifetimeDays" not in r.json()
            assert r.json()["upstream"]["code"] == "CredentialInvalidLifetimeAsPerAppPolicy"
            assert not [a for a in other.state()["applications"] if a.get("uniqueName") == "dicomreg-no-policy-read"]


def test_an_oss_writer_token_carries_a_role_the_returned_roles_json_grants_write(api, tenant):
    made = api.post("/registrations", json={"type": "resource", "name": "dicom-oss-api",
                                            "displayName": "DICOM OSS API", "dicomService": "oss"})
    assert made.status_code in (200, 201), made.text
    roles_json = made.json()["config"]["rolesJson"]
    granted = {r["name"]: set(r["dataActions"]) for r in roles_json["roles"]}
    # The server's own shipped roles, and the writer it lacks.
    assert granted["globalReader"] == {"read"} and granted["globalAdmin"] == {"*"}
    assert all(r["scopes"] == ["/"] and r["notDataActions"] == [] for r in roles_json["roles"])

    reg = create(api, service("oss-writer-roles", "oss", access="writer"))
    secret = secret_client(tenant).get_secret(reg["config"]["clientSecret"]["keyVaultSecretName"]).value
    result = confidential_app(tenant, reg["config"]["clientId"], secret).acquire_token_for_client(
        reg["config"]["scopes"])
    assert "access_token" in result, result
    roles = claims(result["access_token"])["roles"]
    assert any("write" in granted.get(role, ()) or "*" in granted.get(role, ()) for role in roles), roles
    # A reader's role grants read and not write.
    reader = create(api, service("oss-reader-roles", "oss"))
    secret = secret_client(tenant).get_secret(reader["config"]["clientSecret"]["keyVaultSecretName"]).value
    roles = claims(confidential_app(tenant, reader["config"]["clientId"], secret).acquire_token_for_client(
        reader["config"]["scopes"])["access_token"])["roles"]
    assert all("write" not in granted[r] and "*" not in granted[r] for r in roles) and roles


def test_public_spa_config_states_its_24_hour_refresh_tokens_and_gets_one(api, tenant):
    redirect, origin = "https://viewer-rt.example.org/auth", "https://viewer-rt.example.org"
    reg = create(api, {"type": "public", "name": "viewer-rt", "displayName": "Viewer", "dicomService": "managed",
                       "platform": "spa", "redirectUris": [redirect],
                       "signInGroups": [tenant.seed.group.object_id]})  # the seeded user's group may sign in
    config = reg["config"]
    assert config["refreshTokens"] is True and config["refreshTokenLifetime"] == "P1D"
    app = public_app(tenant, config["clientId"], origin=origin)
    flow = app.initiate_auth_code_flow(config["scopes"], redirect_uri=redirect)
    result = app.acquire_token_by_auth_code_flow(flow, follow_authorize(tenant, flow["auth_uri"]))
    assert result.get("refresh_token"), result
    refreshed = app.acquire_token_by_refresh_token(result["refresh_token"], config["scopes"])
    assert "access_token" in refreshed, refreshed
    mobile = create(api, {"type": "public", "name": "viewer-rt-native", "displayName": "Viewer",
                          "dicomService": "managed", "platform": "mobile",
                          "redirectUris": ["http://localhost:8400/callback"]})
    assert mobile["config"]["refreshTokenLifetime"] == "P90D"
