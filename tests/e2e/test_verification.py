"""GET /registrations/{name}/verification: a real token with the registration's own credential, honest about
Entra's propagation delay (202 + Retry-After + Location until the delay passes), and problems that say what is
wrong."""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import datetime, timezone
from urllib.parse import quote

import pytest

from tests.support import (MANAGED_AUDIENCE, api_client, api_token, deploy_oss_dicom, secret_client, service,
                           settings_override)

DICOM_DATA_READER = "e89c7a3c-2f64-4fa1-a847-3e4c9ba4283a"


def created(api, body: dict) -> dict:
    response = api.post("/registrations", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


def verify(api, name: str):
    return api.get(f"/registrations/{name}/verification")


def verified(api, name: str) -> dict:
    response = verify(api, name)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "verified"
    assert "access_token" not in response.text and "eyJ" not in response.text  # never the token
    return body


def failed(api, name: str) -> dict:
    response = verify(api, name)
    assert response.status_code == 409, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"].endswith(":verification-failed")
    return problem


@pytest.fixture(scope="module")
def oss_resource(api, tenant) -> dict:
    """The open-source target's resource registration (another module may have made it already), and the
    local open-source DICOM server deployed with what it returns."""
    resource = created(api, {"type": "resource", "name": "dicom-oss-api", "displayName": "DICOM OSS API",
                             "dicomService": "oss"})
    deploy_oss_dicom(tenant, resource)
    return resource


@pytest.mark.slow(7)
def test_a_new_secret_is_pending_until_the_replication_delay_passes(api, tenant):
    tenant.set_faults({"replicationDelayMs": 3000})
    try:
        created(api, service("verify-delayed"))
        started, answers = time.monotonic(), []
        url = "/registrations/verify-delayed/verification"
        while time.monotonic() - started < 20:
            response = api.get(url)
            answers.append(response.status_code)
            if response.status_code != 202:
                break
            assert response.json()["status"] == "pending"
            assert "propagating" in response.json()["reason"]
            retry_after = int(response.headers["retry-after"])
            assert 1 <= retry_after <= 30
            url = response.headers["location"]
            assert url.startswith("http://") and url.endswith("/api/registrations/verify-delayed/verification")
            time.sleep(min(retry_after, 0.5))  # Logic Apps wait the full Retry-After; the test need not
    finally:
        tenant.set_faults({})
    assert answers[0] == 202 and answers[-1] == 200, answers
    body = response.json()
    assert body["audience"] == MANAGED_AUDIENCE and body["tokenVersion"] == "1.0"
    assert {c["name"] for c in body["checks"] if c["ok"]} == {"token", "Azure role assignment", "data plane"}
    assert body["dataPlane"] == "ok"


def test_managed_service_client_is_verified_with_its_audience_and_role_assignment(api, tenant):
    reg = created(api, service("verify-managed"))
    body = verified(api, "verify-managed")
    assert body["audience"] == MANAGED_AUDIENCE
    assert body["roles"] == [] and body["scopes"] == []
    assert body["expiresOn"].endswith("Z")
    assert all(check["ok"] for check in body["checks"])

    # Someone removes the Azure role assignment: the secret still gets a token, but the client cannot read.
    assignment = next(a for a in tenant.state()["roleAssignments"]
                      if a["properties"]["principalId"] == reg["servicePrincipalId"])
    with propagation_window(0):
        arm_delete(tenant, assignment["id"])
        problem = failed(api, "verify-managed")
    assert "DICOM Data Reader" in problem["detail"] and DICOM_DATA_READER in problem["detail"]
    # ARM no longer lists it, and the DICOM service refuses the same token's search
    assert [c["name"] for c in problem["checks"] if not c["ok"]] == ["Azure role assignment", "data plane"]
    assert "(403)" in next(c["detail"] for c in problem["checks"] if c["name"] == "data plane")


def test_open_source_service_client_is_verified_with_its_app_role_and_fails_without_it(api, tenant,
                                                                                        oss_resource):
    reg = created(api, service("verify-oss", "oss", access="writer"))
    body = verified(api, "verify-oss")
    assert body["audience"] == oss_resource["appId"] and body["tokenVersion"] == "2.0"
    assert body["roles"] == ["globalWriter"] and body["dataPlane"] == "ok"

    assignment = next(a for a in tenant.state()["appRoleAssignments"]
                      if a["principalId"] == reg["servicePrincipalId"])
    with propagation_window(0):
        graph_delete(tenant, f"/v1.0/servicePrincipals/{assignment['resourceId']}/appRoleAssignedTo/"
                             f"{assignment['id']}")
        problem = failed(api, "verify-oss")
    assert "globalWriter" in problem["detail"]


def test_public_client_reports_configuration_checks(api):
    created(api, {"type": "public", "name": "verify-spa", "displayName": "Viewer", "dicomService": "managed",
                  "platform": "spa", "redirectUris": ["https://viewer.example.org/verify"]})
    body = verified(api, "verify-spa")
    checks = {check["name"]: check for check in body["checks"]}
    assert set(checks) == {"service principal", "redirect URIs", "requiredResourceAccess", "admin consent"}
    assert all(check["ok"] for check in checks.values())
    assert "spa" in checks["redirect URIs"]["detail"]
    assert "audience" not in body  # no credential, no token


def test_resource_registration_reports_configuration_checks(api, oss_resource):
    body = verified(api, "dicom-oss-api")
    assert {c["name"] for c in body["checks"]} >= {"service principal", "app roles", "delegated scope"}


def test_confidential_client_gets_a_token_and_has_consent(api):
    created(api, {"type": "confidential", "name": "verify-portal", "displayName": "Portal",
                  "dicomService": "managed", "redirectUris": ["https://portal.example.org/signin-oidc"]})
    body = verified(api, "verify-portal")
    assert body["audience"] == MANAGED_AUDIENCE
    assert {c["name"] for c in body["checks"]} == {"token", "redirect URIs", "requiredResourceAccess",
                                                   "admin consent"}


def test_a_stored_secret_that_entra_refuses_is_pending_while_young_and_a_problem_after(api, tenant):
    reg = created(api, service("verify-wrong-secret"))
    secret_client(tenant).set_secret(reg["credential"]["keyVaultSecretName"], "not-the-secret-entra-knows-0123")
    young = verify(api, "verify-wrong-secret")
    assert young.status_code == 202 and "AADSTS7000215" in young.json()["reason"], young.text
    with propagation_window(0):
        problem = failed(api, "verify-wrong-secret")
    assert "the stored secret is not accepted" in problem["detail"] and problem["aadsts"] == 7000215


def test_certificate_service_client_is_verified_with_its_audience(api):
    created(api, service("verify-cert", credential={"kind": "certificate"}))
    body = verified(api, "verify-cert")
    assert body["audience"] == MANAGED_AUDIENCE and body["tokenVersion"] == "1.0"
    checks = {check["name"]: check for check in body["checks"]}
    assert set(checks) == {"token", "Azure role assignment", "data plane"} and all(c["ok"] for c in checks.values())
    assert "client certificate" in checks["token"]["detail"]


def test_a_stored_certificate_that_entra_does_not_know_is_pending_while_young_and_a_problem_after(api, tenant):
    from registrations.certificates import make_certificate

    reg = created(api, service("verify-wrong-cert", credential={"kind": "certificate"}))
    stranger = make_certificate("not registered on the app", start=datetime.now(timezone.utc), days=1)
    secret_client(tenant).set_secret(reg["credential"]["keyVaultSecretName"], stranger.pem)
    young = verify(api, "verify-wrong-cert")
    assert young.status_code == 202 and "AADSTS700027" in young.json()["reason"], young.text
    assert "client certificate" in young.json()["reason"]
    with propagation_window(0):
        problem = failed(api, "verify-wrong-cert")
    assert "the stored certificate is not accepted" in problem["detail"] and problem["aadsts"] == 700027


def test_a_requester_cannot_verify_another_requesters_registration(host, tenant):
    with api_client(host, api_token(tenant, tenant.seed.requester_client)) as a, \
            api_client(host, api_token(tenant, tenant.seed.requester_client_b)) as b:
        created(a, service("verify-mine"))
        assert verify(a, "verify-mine").status_code == 200
        response = verify(b, "verify-mine")
        assert response.status_code == 404, response.text
        assert response.json()["type"].endswith(":not-found")


def test_an_expired_secret_is_a_problem_that_says_so(host):
    """On a tenant of its own: moving the clock two days on the shared one would expire every cached token
    of the session."""
    from localtenant import LocalTenant

    with LocalTenant.start() as other, settings_override(**other.app_settings()), \
            api_client(host, api_token(other, other.seed.admin_client)) as api:
        created(api, service("verify-expiring", credential={"kind": "secret", "lifetimeDays": 1}))
        other.advance_clock(2 * 86400)
        with settings_override():  # a fresh runtime: the product's own cached tokens expired with the clock
            problem = failed(api, "verify-expiring")
    assert "expired" in problem["detail"] and "rotate" in problem["detail"]
    assert problem["aadsts"] == 7000222


# ------------------------------------------------------------------------------------------------ helpers
@contextmanager
def propagation_window(seconds: int):
    """A registration made seconds ago is "young"; a missing grant then reads as propagation (202). These
    tests break a grant on purpose and want the verdict for an older registration."""
    with settings_override(VERIFY_PROPAGATION_SECONDS=str(seconds)):
        yield


def _admin_session(tenant, scope: str):
    import requests
    from azure.identity import ManagedIdentityCredential

    session = requests.Session()
    session.trust_env = False
    session.verify = tenant.ca_file
    session.headers["Authorization"] = f"Bearer {ManagedIdentityCredential().get_token(scope).token}"
    return session


def arm_delete(tenant, assignment_id: str) -> None:
    """Remove a role assignment as the product's identity (it holds RBAC Administrator on the group)."""
    response = _admin_session(tenant, "https://management.azure.com/.default").delete(
        f"{tenant.arm_endpoint}{quote(assignment_id)}", params={"api-version": "2022-04-01"})
    assert response.status_code == 200, response.text


def graph_delete(tenant, path: str) -> None:
    response = _admin_session(tenant, "https://graph.microsoft.com/.default").delete(f"{tenant.graph_endpoint}{path}")
    assert response.status_code == 204, response.text
