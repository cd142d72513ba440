"""`python -m registrations.setup` against a bare local tenant (no grant for the product, no API registration),
run as an administrator's service principal through DefaultAzureCredential, exactly as a person would run it;
then the whole product end to end with nothing but what setup prepared."""
from __future__ import annotations

import json
import os
import re
import runpy
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from azure.core.pipeline import Pipeline
from azure.core.pipeline.policies import BearerTokenCredentialPolicy
from azure.core.pipeline.transport import RequestsTransport
from azure.core.rest import HttpRequest
from azure.identity import ManagedIdentityCredential

from localtenant import LocalTenant
from tests.support import ACQUIRED_TOKENS, FUNCTION_KEY, MASTER_KEY, api_client, client_credentials_token, \
    deploy_oss_dicom, settings_override

ROOT = Path(__file__).resolve().parents[2]
WRITE_VERBS = ("create", "upsert", "update", "delete", "add", "remove", "set", "recover", "purge")
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
DICOM_DATA_READER = "e89c7a3c-2f64-4fa1-a847-3e4c9ba4283a"


@pytest.fixture(scope="module")
def bare():
    with LocalTenant.start(bare=True) as lt:
        yield lt


def run_setup(lt: LocalTenant, *extra: str, settings_file: Path | None = None) -> subprocess.CompletedProcess:
    """The command line, in a clean environment: the app settings the administrator exported (or, with
    `settings_file`, a local.settings.json holding them) and the administrator's own sign-in (a service
    principal with a secret, read by DefaultAzureCredential)."""
    settings = {k: v for k, v in lt.app_settings().items() if not k.startswith("IDENTITY_")}
    if settings_file:
        settings_file.write_text(json.dumps({"IsEncrypted": False, "Values": settings}))
        extra = ("--settings", str(settings_file), *extra)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
           **({"AZURE_TENANT_ID": lt.tenant_id} if settings_file else settings),
           "AZURE_CLIENT_ID": lt.seed.operator.app_id, "AZURE_CLIENT_SECRET": lt.seed.operator.secret}
    args = ["--principal-id", lt.seed.product.object_id, "--requester", lt.seed.requester_client.object_id,
            "--admin", lt.seed.admin_client.object_id, "--broker", lt.seed.broker_client.object_id, *extra]
    done = subprocess.run([sys.executable, "-m", "registrations.setup", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def writes(lt: LocalTenant) -> dict[str, int]:
    return {op: n for op, n in lt.stats()["calls"].items() if op.split(".")[1].startswith(WRITE_VERBS)}


def printed_settings(output: str) -> dict[str, str]:
    return dict(re.findall(r"^(API_CLIENT_ID|API_AUDIENCE)=(\S+)$", output, re.MULTILINE))


@pytest.fixture(scope="module")
def prepared(bare, tmp_path_factory):
    """What-if first (changes nothing), then setup for real (its first run passes under a 3 s replication
    delay), then again (changes nothing)."""
    before, writes_before = bare.state(), writes(bare)
    plan = run_setup(bare, "--what-if")
    assert bare.state() == before and writes(bare) == writes_before
    for line in ("would create the app registration dicom-registrations-api",
                 "would create the service principal of dicom-registrations-api",
                 "Graph permission Application.ReadWrite.OwnedBy", "Graph permission Directory.Read.All",
                 "Graph permission Policy.Read.All",
                 "Graph permission AppRoleAssignment.ReadWrite.All",  # the local settings have an OSS target
                 "Graph permission DelegatedPermissionGrant.ReadWrite.All",  # GRANT_ADMIN_CONSENT defaults on
                 "would assign Key Vault Secrets Officer", "app role Registrations.Request",
                 "app role Registrations.Admin", "app role Registrations.Broker"):
        assert line in plan.stdout, plan.stdout

    # The operator's first run, under the replication delay `make run` uses: what setup just made (the API's
    # service principal) is not visible to every read at once, and setup waits for it instead of failing.
    bare.set_faults({"replicationDelayMs": 3000})
    try:
        first = run_setup(bare)
    finally:
        bare.set_faults({})
    bare.advance_clock(3.0)  # what the first run wrote is visible to every reader now
    settings = printed_settings(first.stdout)
    assert settings["API_AUDIENCE"] == f"api://{bare.tenant_id}/dicom-registrations-api"
    assert set(first.stdout.splitlines()) >= {line.replace("would ", "") for line in plan.stdout.splitlines()
                                               if line.startswith("would ")}

    after, writes_after = bare.state(), writes(bare)
    again = run_setup(bare, settings_file=tmp_path_factory.mktemp("setup") / "local.settings.json")
    assert "no changes needed" in again.stdout and "would" not in again.stdout
    assert printed_settings(again.stdout) == settings
    assert writes(bare) == writes_after and bare.state() == after
    assert "no changes needed" in run_setup(bare, "--what-if").stdout
    return settings


def test_setup_makes_the_api_registration_and_grants_only_what_the_settings_need(bare, prepared):
    state = bare.state()
    [api] = [a for a in state["applications"] if a.get("uniqueName") == "dicom-registrations-api"]
    assert api["appId"] == prepared["API_CLIENT_ID"]
    assert api["identifierUris"] == [prepared["API_AUDIENCE"]]
    assert api["api"]["requestedAccessTokenVersion"] == 2
    roles = {r["value"]: r for r in api["appRoles"]}
    assert set(roles) == {"Registrations.Admin", "Registrations.Request", "Registrations.Read", "Registrations.Broker"}
    assert all(r["isEnabled"] and sorted(r["allowedMemberTypes"]) == ["Application", "User"] for r in roles.values())
    [api_sp] = [s for s in state["servicePrincipals"] if s["appId"] == api["appId"]]
    assert api_sp["appRoleAssignmentRequired"] is True

    graph_sp = next(s for s in state["servicePrincipals"] if s["appId"] == "00000003-0000-0000-c000-000000000000")
    graph_roles = {r["id"]: r["value"] for r in graph_sp["appRoles"]}
    product = bare.seed.product.object_id
    held = sorted(graph_roles[a["appRoleId"]] for a in state["appRoleAssignments"]
                  if a["principalId"] == product and a["resourceId"] == graph_sp["id"])
    assert held == ["AppRoleAssignment.ReadWrite.All", "Application.Read.All", "Application.ReadWrite.OwnedBy",
                    "DelegatedPermissionGrant.ReadWrite.All", "Directory.Read.All", "Policy.Read.All"]
    assigned = {(a["principalId"], roles_by_id(api)[a["appRoleId"]]) for a in state["appRoleAssignments"]
                if a["resourceId"] == api_sp["id"]}
    assert assigned == {(bare.seed.requester_client.object_id, "Registrations.Request"),
                        (bare.seed.admin_client.object_id, "Registrations.Admin"),
                        (bare.seed.broker_client.object_id, "Registrations.Broker")}

    arm = [a["properties"] for a in state["roleAssignments"] if a["properties"]["principalId"] == product]
    by_scope = {(p["scope"], p["roleDefinitionId"].rsplit("/", 1)[-1]): p for p in arm}
    assert set(by_scope) == {
        (bare.seed.vault_resource_id, "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"),  # Key Vault Secrets Officer
        (bare.seed.vault_resource_id, "f58310d9-a9f6-439a-9e8d-f62e7b41a168"),  # RBAC Administrator
        (bare.seed.dicom_resource_id, "f58310d9-a9f6-439a-9e8d-f62e7b41a168"),
    }
    for (scope, _), p in by_scope.items():
        if p["condition"]:
            assert p["conditionVersion"] == "2.0"
            assert "ActionMatches{'Microsoft.Authorization/roleAssignments/write'}" in p["condition"]
    assert "4633458b-17de-408a-b874-0445c86b69e6" in by_scope[
        (bare.seed.vault_resource_id, "f58310d9-a9f6-439a-9e8d-f62e7b41a168")]["condition"]


def roles_by_id(app: dict) -> dict[str, str]:
    return {r["id"]: r["value"] for r in app["appRoles"]}


def test_the_condition_keeps_the_identity_from_assigning_any_other_role(bare, prepared):
    """The function app's own identity, as it signs in on Azure: the Role Based Access Control
    Administrator that setup gave it may assign a DICOM role on the service, and nothing else."""
    credential = ManagedIdentityCredential()
    previous = {k: os.environ.get(k) for k in ("IDENTITY_ENDPOINT", "IDENTITY_HEADER")}
    os.environ.update(IDENTITY_ENDPOINT=bare.identity_endpoint, IDENTITY_HEADER=bare.identity_header)
    try:
        credential = ManagedIdentityCredential()
        pipeline = Pipeline(RequestsTransport(connection_verify=bare.ca_file),
                            [BearerTokenCredentialPolicy(credential, "https://management.azure.com/.default")])

        def assign(role: str, name: str) -> int:
            scope = bare.seed.dicom_resource_id
            request = HttpRequest(
                "PUT", f"{bare.arm_endpoint}{scope}/providers/Microsoft.Authorization/roleAssignments/{name}",
                params={"api-version": "2022-04-01"},
                json={"properties": {"roleDefinitionId": f"/subscriptions/{bare.seed.subscription_id}/providers/"
                                     f"Microsoft.Authorization/roleDefinitions/{role}",
                                     "principalId": bare.seed.reader_client.object_id,
                                     "principalType": "ServicePrincipal"}})
            return pipeline.run(request).http_response.status_code

        assert assign(OWNER, "0b0c3f6e-1111-4a2b-8c3d-4e5f6a7b8c9d") == 403
        assert assign(DICOM_DATA_READER, "0b0c3f6e-2222-4a2b-8c3d-4e5f6a7b8c9d") == 201
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


REGISTRATIONS = [
    {"type": "resource", "name": "dicom-oss-api", "displayName": "DICOM server API", "dicomService": "oss"},
    {"type": "service", "name": "setup-daemon", "displayName": "Daemon", "dicomService": "managed",
     "access": "reader"},
    {"type": "service", "name": "setup-oss-writer", "displayName": "OSS writer", "dicomService": "oss",
     "access": "writer"},
    {"type": "public", "name": "setup-viewer", "displayName": "Viewer", "dicomService": "managed",
     "platform": "spa", "redirectUris": ["https://viewer.contoso.org/auth"]},
    {"type": "confidential", "name": "setup-portal", "displayName": "Portal", "dicomService": "managed",
     "redirectUris": ["https://portal.contoso.org/signin-oidc"]},
]


@pytest.fixture(scope="module")
def product(bare, prepared):
    """The function app on the local host with the tenant's settings plus the two that setup printed."""
    import devhost

    app = runpy.run_path(str(ROOT / "function_app.py"))["app"]  # a FunctionApp of its own: indexing is once
    with settings_override(**{**bare.app_settings(), **prepared}):
        with devhost.start_in_thread(devhost.build_app(app, keys={"master": MASTER_KEY,
                                                                  "function": FUNCTION_KEY})) as server:
            yield server


def token_for(lt: LocalTenant, client, audience: str) -> str:
    token = client_credentials_token(lt, client.app_id, client.secret, f"{audience}/.default")
    ACQUIRED_TOKENS.append(token)
    return token


def verified(api: httpx.Client, name: str) -> dict:
    for _ in range(40):
        response = api.get(f"/registrations/{name}/verification")
        if response.status_code != 202:
            assert response.status_code == 200, response.text
            return response.json()
        time.sleep(0.25)
    raise AssertionError(f"{name} still pending")


def test_with_what_setup_prepared_each_type_is_created_verified_and_deleted(bare, prepared, product):
    admin = api_client(product, token_for(bare, bare.seed.admin_client, prepared["API_AUDIENCE"]))
    with admin:
        for body in REGISTRATIONS:
            response = admin.post("/registrations", json=body)
            assert response.status_code == 201, response.text
            if body["type"] == "resource":  # the open-source DICOM server runs with what its registration returns
                deploy_oss_dicom(bare, response.json())
            assert verified(admin, body["name"])["checks"]
        for body in reversed(REGISTRATIONS):  # the resource registration last: its clients go first
            assert admin.delete(f"/registrations/{body['name']}").status_code == 200
        assert admin.get("/registrations").json()["value"] == []


def test_the_requester_setup_named_may_request_and_nothing_more(bare, prepared, product):
    requester = api_client(product, token_for(bare, bare.seed.requester_client, prepared["API_AUDIENCE"]))
    reader = api_client(product, token_for(bare, bare.seed.reader_client, prepared["API_AUDIENCE"]))
    with requester, reader:
        body = {"type": "service", "name": "setup-requested", "displayName": "Requested",
                "dicomService": "managed", "access": "reader"}
        assert requester.post("/registrations", json=body).status_code == 201
        assert reader.get("/registrations").status_code == 403  # setup gave the reader nothing
        assert requester.delete("/registrations/setup-requested").status_code == 200


def test_setup_refuses_an_identity_that_is_not_a_guid(bare):
    done = subprocess.run([sys.executable, "-m", "registrations.setup", "--principal-id", "my-function-app"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "is not an object id" in done.stderr


def test_setup_grants_the_registry_s_table_role_on_the_storage_account_it_is_given(bare, prepared):
    """The registry lives in the function app's storage account: with --storage-account-id setup checks that
    the identity holds Storage Table Data Contributor there and assigns it when it does not (infra/ assigns the
    same); run again, it changes nothing."""
    account = (f"/subscriptions/{bare.seed.subscription_id}/resourceGroups/local-rg/providers/Microsoft.Storage/"
               "storageAccounts/stregistry")
    table_role = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"  # Storage Table Data Contributor

    def held() -> list[dict]:
        return [a["properties"] for a in bare.state()["roleAssignments"]
                if a["properties"]["principalId"] == bare.seed.product.object_id
                and a["properties"]["scope"].lower() == account.lower()]

    assert held() == []
    first = run_setup(bare, "--storage-account-id", account)
    assert "assign Storage Table Data Contributor" in first.stdout
    assert [p["roleDefinitionId"].rsplit("/", 1)[-1] for p in held()] == [table_role]
    assert "no changes needed" in run_setup(bare, "--storage-account-id", account).stdout


def test_setup_in_a_tenant_that_allows_only_default_identifier_uris_uses_the_appid_form(tmp_path):
    """Where the tenant's app management policy allows a new application no identifier URI but api://{appId}
    or api://{tenantId}/{appId} (nonDefaultUriAddition), setup's first try (the name's form) is refused; it
    says so, gives the API api://{tenantId}/{appId}, prints that as API_AUDIENCE, and a second run changes
    nothing. The function app then accepts a token for that audience. Breaks if setup fails there, or prints
    an audience the registration does not have."""
    import devhost

    with LocalTenant.start(bare=True) as lt:
        lt.set_app_management_policy({"isEnabled": True, "applicationRestrictions": {"identifierUris": {
            "nonDefaultUriAddition": {"state": "enabled"}}}})
        first = run_setup(lt)
        settings = printed_settings(first.stdout)
        app = next(a for a in lt.state()["applications"] if a.get("uniqueName") == "dicom-registrations-api")
        assert settings["API_AUDIENCE"] == f"api://{lt.tenant_id}/{app['appId']}", first.stdout
        assert app["identifierUris"] == [settings["API_AUDIENCE"]]
        assert "refuses api://" in first.stdout and "nonDefaultUriAddition" in first.stdout, first.stdout
        again = run_setup(lt)
        assert "no changes needed" in again.stdout and printed_settings(again.stdout) == settings
        app_ = runpy.run_path(str(ROOT / "function_app.py"))["app"]
        keys = {"master": MASTER_KEY, "function": FUNCTION_KEY}
        token = token_for(lt, lt.seed.admin_client, settings["API_AUDIENCE"])
        with settings_override(**{**lt.app_settings(), **settings}), \
                devhost.start_in_thread(devhost.build_app(app_, keys=keys)) as server, \
                api_client(server, token) as admin:
            assert admin.get("/registrations").status_code == 200
