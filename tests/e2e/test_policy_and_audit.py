"""Platform policy beyond roles (federated issuers, admin-only types, settings a request needs), what a
requester learns from a refused delete, the audit trail of writes, and the anonymous routes through the host
(what the health function discloses is in tests/functions)."""

from __future__ import annotations

import json
import logging
import uuid

import httpx
import pytest

from tests.support import api_client, easy_auth_principal, service, settings_override

OTHER_ISSUER = "https://token.actions.githubusercontent.com"


def federated(name: str, issuer: str, **extra) -> dict:
    return service(name, credential={"kind": "federated", "issuer": issuer, "subject": f"system:{name}", **extra})


def policy_refusal(response: httpx.Response) -> dict:
    assert response.status_code == 403, response.text
    problem = response.json()
    assert problem["type"].endswith(":policy")
    return problem


def application_names(tenant) -> set[str]:
    return {app.get("uniqueName") for app in tenant.state()["applications"]}


# ----------------------------------------------------------------------------------------------- policy
def test_requesters_need_an_allowed_issuer_list_for_federated_credentials(as_, tenant):
    requester, admin = as_["requester"], as_["admin"]
    refused = policy_refusal(requester.post("/registrations", json=federated("pol-fed", tenant.federated_issuer)))
    assert "ALLOWED_FEDERATED_ISSUERS" in refused["detail"]

    with settings_override(ALLOWED_FEDERATED_ISSUERS=f"{OTHER_ISSUER}, {tenant.federated_issuer}"):
        # The list binds admins too.
        refused = policy_refusal(admin.post("/registrations", json=federated("pol-fed", "https://issuer.example")))
        assert refused["allowedFederatedIssuers"] == [OTHER_ISSUER, tenant.federated_issuer]
        policy_refusal(requester.post("/registrations", json=federated("pol-fed", tenant.federated_issuer,
                                                                        audience="api://something-else")))
        assert "dicomreg-pol-fed" not in application_names(tenant)
        made = requester.post("/registrations", json=federated("pol-fed", tenant.federated_issuer))
        assert made.status_code == 201, made.text
        assert requester.delete("/registrations/pol-fed").status_code == 200


def with_oss_target(app_settings, name: str, resource: str) -> str:
    """DICOM_SERVICES with one more open-source target, whose resource registration is ``resource``."""
    targets = json.loads(app_settings["DICOM_SERVICES"])
    targets[name] = {"kind": "oss", "url": f"https://{name}.local.test", "resourceRegistration": resource}
    return json.dumps(targets)


def test_resource_registrations_are_for_admins(as_, app_settings):
    body = {"type": "resource", "name": "pol-admin-api", "displayName": "DICOM OSS API", "dicomService": "oss3"}
    with settings_override(DICOM_SERVICES=with_oss_target(app_settings, "oss3", "pol-admin-api")):
        try:
            refused = policy_refusal(as_["requester"].post("/registrations", json=body))
            assert "Registrations.Admin" in refused["detail"]
        finally:  # without the rule the requester would have made it
            as_["requester"].delete("/registrations/pol-admin-api")


def test_secret_readers_without_the_vault_resource_id_are_refused_before_any_write(as_, tenant):
    body = service("pol-readers", secretReaders=[tenant.seed.reader_client.object_id])
    with settings_override(KEY_VAULT_RESOURCE_ID=None):
        response = as_["admin"].post("/registrations", json=body)
    assert response.status_code == 422, response.text
    assert "KEY_VAULT_RESOURCE_ID" in response.json()["detail"]
    assert "dicomreg-pol-readers" not in application_names(tenant)
    assert not [s for s in tenant.state()["secrets"] if "pol-readers" in s["name"]]


def test_a_custom_identifier_uri_must_use_the_tenant_form(as_, tenant):
    body = {"type": "resource", "name": "dicom-oss-api", "displayName": "DICOM OSS API", "dicomService": "oss",
            "identifierUri": "api://contoso-dicom"}
    response = as_["admin"].post("/registrations", json=body)
    try:
        assert response.status_code == 422, response.text
        assert f"api://{tenant.tenant_id}/" in response.json()["detail"]
        assert response.json()["errors"][0]["loc"][-1] == "identifierUri"
    finally:
        if response.status_code in (200, 201):
            as_["admin"].delete("/registrations/dicom-oss-api")


# ----------------------------------------------------------------------------------- what a 409 tells
def test_a_requester_sees_only_its_own_dependents_of_a_resource(host, tenant, app_settings):
    """The requester that owns a resource registration (its oid made it, as an admin) may not learn the
    names of other requesters' clients of it; Easy Auth principals make the oids easy to choose."""
    owner, other = str(uuid.uuid4()), str(uuid.uuid4())

    def principal(oid: str, role: str) -> dict:
        return {"X-MS-CLIENT-PRINCIPAL": easy_auth_principal(oid, [f"Registrations.{role}"])}

    client = {"type": "service", "dicomService": "oss2", "access": "reader"}
    with settings_override(WEBSITE_AUTH_ENABLED="True",
                           DICOM_SERVICES=with_oss_target(app_settings, "oss2", "pol-oss-api")), \
            api_client(host, None) as api:
        made = api.post("/registrations", headers=principal(owner, "Admin"), json={
            "type": "resource", "name": "pol-oss-api", "displayName": "OSS 2", "dicomService": "oss2",
            "identifierUri": f"api://{tenant.tenant_id}/pol-oss-api-custom"})
        assert made.status_code == 201, made.text
        assert made.json()["identifierUri"] == f"api://{tenant.tenant_id}/pol-oss-api-custom"
        for oid, name in [(owner, "pol-mine"), (other, "pol-theirs")]:
            created = api.post("/registrations", headers=principal(oid, "Request"),
                               json={**client, "name": name, "displayName": name})
            assert created.status_code == 201, created.text

        refused = api.delete("/registrations/pol-oss-api", headers=principal(owner, "Request"))
        assert refused.status_code == 409, refused.text
        problem = refused.json()
        assert problem["dependents"] == ["pol-mine"] and problem["otherDependents"] == 1
        assert "pol-theirs" not in refused.text

        as_admin = api.delete("/registrations/pol-oss-api", headers=principal(owner, "Admin")).json()
        assert as_admin["dependents"] == ["pol-mine", "pol-theirs"]

        for oid, name in [(owner, "pol-mine"), (other, "pol-theirs"), (owner, "pol-oss-api")]:
            assert api.delete(f"/registrations/{name}", headers=principal(oid, "Admin")).status_code == 200


# ------------------------------------------------------------------------------------------------ audit
def audit_records(caplog) -> list[dict]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "registrations.audit"]


def test_every_write_leaves_one_audit_record(as_, tenant, caplog):
    requester = as_["requester"]
    too_long = service("audit-other", credential={"kind": "secret", "lifetimeDays": 700})
    calls = [
        ("create", "succeeded", lambda h: requester.post("/registrations", json=service("audit-me"), headers=h)),
        ("create", "replayed", lambda h: requester.post("/registrations", json=service("audit-me"), headers=h)),
        ("rotate", "succeeded", lambda h: requester.post("/registrations/audit-me/credentials", headers=h)),
        ("create", "refused", lambda h: requester.post("/registrations", json=too_long, headers=h)),
        ("delete", "succeeded", lambda h: requester.delete("/registrations/audit-me", headers=h)),
    ]
    with caplog.at_level(logging.INFO, logger="registrations.audit"):
        for event, outcome, call in calls:
            correlation = f"audit-{uuid.uuid4()}"
            caplog.clear()
            response = call({"x-correlation-id": correlation})
            assert response.headers["x-correlation-id"] == correlation
            [record] = audit_records(caplog)
            assert record["event"] == f"registration.{event}"
            assert record["outcome"] == outcome and record["status"] == response.status_code
            assert record["correlationId"] == correlation
            assert record["caller"]["oid"] == tenant.seed.requester_client.object_id
            assert record["registration"] == ("audit-other" if outcome == "refused" else "audit-me")
            assert set(record) == {"event", "outcome", "status", "method", "registration", "correlationId",
                                   "caller", "operation", "durationMs"}
            assert set(record["caller"]) == {"oid", "appid", "name"}


def test_a_write_that_fails_unexpectedly_is_audited(api, monkeypatch, caplog):
    from registrations import wiring

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(wiring.runtime().service, "create", broken)
    with caplog.at_level(logging.INFO, logger="registrations.audit"):
        response = api.post("/registrations", json=service("audit-broken"))
    assert response.status_code == 500
    [record] = audit_records(caplog)
    assert (record["event"], record["outcome"], record["status"], record["registration"]) == (
        "registration.create", "failed", 500, "audit-broken")


# ------------------------------------------------------------------------------ anonymous routes
def test_health_needs_no_key_or_token(host):
    response = httpx.get(f"{host.url}/api/health", trust_env=False)
    assert response.status_code == 200 and response.json()["status"] == "ok"


@pytest.mark.parametrize("route", ["openapi.json", "openapi3.json"])
def test_the_openapi_document_is_cached_privately_and_names_the_platform_host(host, route):
    served = httpx.get(f"{host.url}/api/{route}", trust_env=False)
    assert served.headers["cache-control"] == "private, max-age=300"
    with settings_override(WEBSITE_HOSTNAME="dicomreg.azurewebsites.net"):
        document = httpx.get(f"{host.url}/api/{route}", headers={"Host": "attacker.example"},
                             trust_env=False).json()
    if route == "openapi.json":
        assert (document["host"], document["schemes"]) == ("dicomreg.azurewebsites.net", ["https"])
    else:
        assert document["servers"] == [{"url": "https://dicomreg.azurewebsites.net/api"}]
