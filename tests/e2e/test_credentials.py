"""Credential lifecycle: certificates, federated credentials, rotation with overlap, the sweep, per-secret
readers. Time is injected into the sweep; nothing sleeps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.identity import ClientSecretCredential
from azure.keyvault.secrets import SecretClient

from tests.support import MANAGED_AUDIENCE, MASTER_KEY, claims, confidential_app, create, secret_client, service


def token_with(tenant, client_id: str, credential) -> dict:
    return confidential_app(tenant, client_id, credential).acquire_token_for_client([f"{MANAGED_AUDIENCE}/.default"])


def sweep(now: datetime) -> dict:
    from registrations import sweep as sweeper
    from registrations import wiring

    return sweeper.run(wiring.runtime().service, now=now)


def test_certificate_credential_gets_a_token_with_a_client_assertion(api, tenant):
    reg = create(api, service("cred-cert", credential={"kind": "certificate"}))
    config = reg["config"]
    assert "clientSecret" not in config
    reference = config["clientCertificate"]
    assert reference["contentType"] == "application/x-pem-file" and len(reference["thumbprint"]) == 40
    pem = secret_client(tenant).get_secret(reference["keyVaultSecretName"])
    assert pem.properties.content_type == "application/x-pem-file"
    assert "PRIVATE KEY" in pem.value and "CERTIFICATE" in pem.value
    result = token_with(tenant, config["clientId"], {"private_key": pem.value, "thumbprint": reference["thumbprint"]})
    assert "access_token" in result, result
    assert claims(result["access_token"])["aud"] == MANAGED_AUDIENCE
    # GET shows the same certificate.
    assert api.get("/registrations/cred-cert").json()["credential"]["thumbprint"] == reference["thumbprint"]


def test_federated_credential_needs_no_secret(api, tenant):
    subject = "system:serviceaccount:imaging:pacs-router"
    reg = create(api, service("cred-federated", credential={"kind": "federated", "issuer": tenant.federated_issuer,
                                                            "subject": subject}))
    config = reg["config"]
    assert "clientSecret" not in config and "clientCertificate" not in config
    assert config["federatedCredential"] == {"issuer": tenant.federated_issuer, "subject": subject,
                                             "audience": "api://AzureADTokenExchange"}
    assert not [s for s in tenant.state()["secrets"] if "cred-federated" in s["name"]]
    result = token_with(tenant, config["clientId"],
                        {"client_assertion": lambda: tenant.federated_assertion(subject)})
    assert "access_token" in result, result
    assert claims(result["access_token"])["aud"] == MANAGED_AUDIENCE
    # Another subject from the same issuer is not trusted.
    other = token_with(tenant, config["clientId"],
                       {"client_assertion": lambda: tenant.federated_assertion("someone-else")})
    assert "access_token" not in other
    got = api.get("/registrations/cred-federated").json()["credential"]
    assert got["subject"] == subject and got["issuer"] == tenant.federated_issuer
    # Nothing to rotate.
    assert api.post("/registrations/cred-federated/credentials").status_code == 409


def test_rotation_keeps_the_old_secret_through_the_overlap_then_removes_it(api, tenant):
    reg = create(api, service("cred-rotate"))
    client_id, name = reg["appId"], reg["credential"]["keyVaultSecretName"]
    vault = secret_client(tenant)
    old = vault.get_secret(name).value

    first = api.post("/registrations/cred-rotate/credentials", headers={"Idempotency-Key": "rotate-1"})
    assert first.status_code == 201, first.text
    replay = api.post("/registrations/cred-rotate/credentials", headers={"Idempotency-Key": "rotate-1"})
    assert replay.status_code == 200 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == first.json()
    states = {c["state"] for c in first.json()["credentials"]}
    assert states == {"active", "superseded"}
    assert "secretText" not in first.text and "hint" not in first.text

    new = vault.get_secret(name).value
    assert new != old
    assert len(list(vault.list_properties_of_secret_versions(name))) == 2
    # Both work during the overlap.
    assert "access_token" in token_with(tenant, client_id, old)
    assert "access_token" in token_with(tenant, client_id, new)

    superseded = next(c for c in first.json()["credentials"] if c["state"] == "superseded")
    remove_after = datetime.fromisoformat(superseded["removeAfter"].replace("Z", "+00:00"))
    assert timedelta(days=6) < remove_after - datetime.now(timezone.utc) <= timedelta(days=7)

    # A day before the overlap ends nothing is removed; a day after, the old credential goes.
    assert not sweep(remove_after - timedelta(days=1))["removed"]
    report = sweep(remove_after + timedelta(days=1))
    assert [r["keyId"] for r in report["removed"] if r["registration"] == "cred-rotate"] == [superseded["keyId"]]
    assert token_with(tenant, client_id, old).get("error") == "invalid_client"
    assert "access_token" in token_with(tenant, client_id, new)
    listed = api.get("/registrations/cred-rotate/credentials").json()["credentials"]
    assert [c["state"] for c in listed] == ["active"]
    versions = {v.version: v.enabled for v in vault.list_properties_of_secret_versions(name)}
    assert sorted(versions.values()) == [False, True]


def test_certificate_rotation_keeps_both_certificates_valid(api, tenant):
    create(api, service("cred-cert-rotate", credential={"kind": "certificate"}))
    rotated = api.post("/registrations/cred-cert-rotate/credentials", headers={"Idempotency-Key": "c1"})
    assert rotated.status_code == 201, rotated.text
    assert sorted(c["state"] for c in rotated.json()["credentials"]) == ["active", "superseded"]
    app = next(a for a in tenant.state()["applications"] if a.get("uniqueName") == "dicomreg-cred-cert-rotate")
    assert len(app["keyCredentials"]) == 2


def test_sweep_rotates_opted_in_registrations_near_expiry_and_reports(api, tenant):
    create(api, service("cred-auto", autoRotate=True, credential={"kind": "secret", "lifetimeDays": 40}))
    create(api, service("cred-manual", credential={"kind": "secret", "lifetimeDays": 40}))
    # Fifteen days on, both have 25 days left: inside the 30-day rotation and warning windows.
    report = sweep(datetime.now(timezone.utc) + timedelta(days=15))
    assert "cred-auto" in {r["registration"] for r in report["rotated"]}
    assert "cred-manual" not in {r["registration"] for r in report["rotated"]}
    expiring = {e["name"] for e in report["expiring"]}
    assert "cred-manual" in expiring and "cred-auto" not in expiring
    states = [c["state"] for c in api.get("/registrations/cred-auto/credentials").json()["credentials"]]
    assert sorted(states) == ["active", "superseded"]

    listed = api.get("/reports/expiring", params={"days": 45})
    assert listed.status_code == 200
    assert "cred-manual" in {e["name"] for e in listed.json()["value"]}
    assert "cred-manual" not in {e["name"] for e in api.get("/reports/expiring", params={"days": 30}).json()["value"]}
    assert api.get("/reports/expiring", params={"days": 0}).status_code == 422


def test_sweep_finds_drift_and_repairs_only_what_is_safe(api, tenant):
    vault = secret_client(tenant)
    vault.set_secret("dicomreg--gone--secret", "orphaned value that belongs to nobody",
                     tags={"managedBy": "dicom-registrations", "appId": "00000000-0000-0000-0000-00000000dead"})
    reg = create(api, service("cred-drift"))
    vault.begin_delete_secret(reg["credential"]["keyVaultSecretName"]).wait()

    soon = sweep(datetime.now(timezone.utc))
    assert "dicomreg--gone--secret" not in {r.get("secret") for r in soon["repaired"]}  # too young to judge
    later = sweep(datetime.now(timezone.utc) + timedelta(hours=2))
    assert {"kind": "missingSecret", "registration": "cred-drift"} in later["drift"]
    assert "dicomreg--gone--secret" in {r.get("secret") for r in later["repaired"]}
    assert vault.get_deleted_secret("dicomreg--gone--secret").recovery_id
    # The registration whose secret is missing is reported, not changed.
    assert api.get("/registrations/cred-drift").status_code == 200


def test_the_sweep_removes_idempotency_keys_past_their_day_and_keeps_the_rest(api, tenant):
    """Every Idempotency-Key sent is a registry row kept 24 h; the sweep removes those past it, so the partition
    does not grow with every key ever sent. Breaks if the sweep leaves them, or removes a live one."""
    def keys() -> set[str]:
        return {r["RowKey"] for r in tenant.registry_rows() if r["RowKey"].startswith("idem:")}

    before = keys()
    made = api.post("/registrations", json=service("idem-purge"), headers={"Idempotency-Key": "idem-purge-1"})
    assert made.status_code == 201, made.text
    sent = keys() - before
    assert len(sent) == 1
    sweep(datetime.now(timezone.utc))
    assert sent <= keys()  # within its day the key still answers a retry
    report = sweep(datetime.now(timezone.utc) + timedelta(hours=25))
    assert not sent & keys(), keys()
    assert any(r.get("kind") == "expiredIdempotencyKeys" and r["count"] >= 1 for r in report["repaired"]), report
    assert api.delete("/registrations/idem-purge").status_code == 200


def test_the_timer_runs_through_the_host(host):
    response = httpx.post(f"{host.url}/admin/functions/sweep_credentials", headers={"x-functions-key": MASTER_KEY},
                          json={}, trust_env=False, timeout=120)
    assert response.status_code == 202, response.text


def test_a_named_reader_can_read_that_secret_and_no_other(api, tenant):
    reader = tenant.seed.reader_client
    reg = create(api, service("cred-shared", secretReaders=[reader.object_id]))
    other = create(api, service("cred-private"))
    as_reader = SecretClient(
        tenant.vault_url,
        ClientSecretCredential(tenant.tenant_id, reader.app_id, reader.secret, authority=tenant.authority_host,
                               disable_instance_discovery=True, connection_verify=tenant.ca_file),
        verify_challenge_resource=False, connection_verify=tenant.ca_file)
    assert as_reader.get_secret(reg["credential"]["keyVaultSecretName"]).value
    with pytest.raises(HttpResponseError) as denied:
        as_reader.get_secret(other["credential"]["keyVaultSecretName"])
    assert denied.value.status_code == 403
    assert reg["secretReaders"] == [reader.object_id]

    removed = api.delete("/registrations/cred-shared").json()["removed"]
    assert sum(1 for r in removed if r["kind"] == "roleAssignment" and "/secrets/" in r["id"]) == 1
    assert not [a for a in tenant.state()["roleAssignments"]
                if a["properties"]["principalId"] == reader.object_id and "cred-shared" in a["properties"]["scope"]]


def test_a_rotation_that_fails_inside_a_step_is_a_problem_naming_the_step(api, monkeypatch):
    from registrations.adapters.vault import VaultClient

    create(api, service("cred-rotate-broken"))
    before = api.get("/registrations/cred-rotate-broken/credentials").json()["credentials"]

    def broken(self, *args, **kwargs):
        raise RuntimeError("the Key Vault client broke")  # not an answer from Azure: a bug or a library fault

    with monkeypatch.context() as patched:
        patched.setattr(VaultClient, "set_secret", broken)
        response = api.post("/registrations/cred-rotate-broken/credentials", headers={"Idempotency-Key": "broken-1"})
    assert response.status_code == 502, response.text
    problem = response.json()
    assert problem["type"].endswith(":rotation-failed")
    assert problem["failedStep"] == "store credential in Key Vault" and problem["undoneSteps"] == ["add password"]
    assert "broke" not in problem["detail"]
    after = api.get("/registrations/cred-rotate-broken/credentials").json()["credentials"]
    assert [c["keyId"] for c in after] == [c["keyId"] for c in before]  # the added password was removed


def test_the_expiring_report_reads_the_services_clock(api):
    from registrations import wiring
    from registrations.settings import load

    create(api, service("cred-expiring-clock", credential={"kind": "secret", "lifetimeDays": 10}))

    def reported() -> dict:
        response = api.get("/reports/expiring", params={"days": 1})
        assert response.status_code == 200, response.text
        return {item["name"]: item for item in response.json()["value"]}

    assert "cred-expiring-clock" not in reported()
    later = datetime.now(timezone.utc) + timedelta(days=9.5)
    with wiring.use(wiring.build(load(), clock=lambda: later)):
        assert 0.4 <= reported()["cred-expiring-clock"]["daysLeft"] <= 0.6
