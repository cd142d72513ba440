"""Test support shared by every suite (kept out of conftest.py so that it is imported once, as one module).

Fixtures live in tests/conftest.py; the token clients (msal, azure-identity) in tests/clients.py; everything a
test module needs from another one lives here, so that no test module imports from a test module."""

from __future__ import annotations

import base64
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

FUNCTION_KEY = "e2e-function-key"
MASTER_KEY = "e2e-master-key"
MANAGED_AUDIENCE = "https://dicom.healthcareapis.azure.com"

# Every log record and every API response body of the session, for the no-secret-leak check.
CAPTURED: list[str] = []
# Every response the API clients received: (method, path, status, content type, body), for the check that
# each body is what the response models (and so the OpenAPI document) promise.
RESPONSES: list[tuple[str, str, int, str, str]] = []
# Every access token the test clients acquired (the local tenant records the ones it issues, the function
# app's own included; this also has those of other tenants a test starts), for the same check.
ACQUIRED_TOKENS: list[str] = []


class CaptureAll(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            CAPTURED.append(self.format(record))
        except Exception:  # a record that cannot be formatted is still looked at raw
            CAPTURED.append(repr(record.__dict__))


def _keep(method: str, path: str, status: int, content_type: str, body: str) -> None:
    """A response the session saw, for the session-wide checks (no secret leaks, response models)."""
    CAPTURED.append(body)
    RESPONSES.append((method, path, status, content_type.split(";")[0], body))


# ------------------------------------------------------------------------------- the API over HTTP
def api_client(host, token: str | None) -> httpx.Client:
    """An HTTP client for the function app on the local host; every response body is kept in CAPTURED."""
    headers = {"x-functions-key": FUNCTION_KEY}
    if token:
        headers["Authorization"] = f"Bearer {token}"

    def keep_body(response: httpx.Response) -> None:
        response.read()
        _keep(response.request.method, response.request.url.path, response.status_code,
              response.headers.get("content-type", ""), response.text)

    return httpx.Client(base_url=f"{host.url}/api", headers=headers, timeout=120, trust_env=False,
                        event_hooks={"response": [keep_body]})


def api_token(tenant, client) -> str:
    from tests.clients import client_credentials_token

    token = client_credentials_token(tenant, client.app_id, client.secret,
                                     f"{tenant.seed.api.identifier_uri}/.default")
    ACQUIRED_TOKENS.append(token)
    return token


def create(api, body: dict, expected: int = 201) -> dict:
    response = api.post("/registrations", json=body)
    assert response.status_code == expected, response.text
    return response.json()


# ------------------------------------------------------------------------------------ request bodies
def service(name: str, target: str = "managed", **extra) -> dict:
    """A service-client registration request (reader access) on `target`."""
    return {"type": "service", "name": name, "displayName": name, "dicomService": target, "access": "reader",
            **extra}


def easy_auth_principal(oid: str, roles: list[str], *, auth_typ: str = "aad", **claims: str) -> str:
    """An X-MS-CLIENT-PRINCIPAL header value, as Easy Auth forwards it."""
    principal = {"auth_typ": auth_typ, "name_typ": "name", "role_typ": "roles",
                 "claims": [{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": oid},
                            {"typ": "name", "val": "Easy Auth caller"}]
                 + [{"typ": "roles", "val": role} for role in roles]
                 + [{"typ": typ, "val": val} for typ, val in claims.items()]}
    return base64.b64encode(json.dumps(principal).encode()).decode()


# ------------------------------------------------------------------------------ the local tenant's state
def secret_client(tenant) -> SecretClient:
    """Key Vault as an operator with access sees it (the product identity holds Secrets Officer)."""
    return SecretClient(tenant.vault_url, ManagedIdentityCredential(), verify_challenge_resource=False,
                        connection_verify=tenant.ca_file)


def objects_named(tenant, name: str) -> dict[str, list]:
    """Everything in the local tenant that belongs to registration `name`."""
    state = tenant.state()
    apps = [a for a in state["applications"] if a.get("uniqueName") == f"dicomreg-{name}"]
    app_ids = {a["appId"] for a in apps}
    sps = [s for s in state["servicePrincipals"] if s["appId"] in app_ids]
    sp_ids = {s["id"] for s in sps}
    secret_name = f"dicomreg--{name}--secret"
    return {
        "applications": apps,
        "servicePrincipals": sps,
        "passwords": [p for a in apps for p in a.get("passwordCredentials", [])],
        "roleAssignments": [r for r in state["roleAssignments"] if r["properties"]["principalId"] in sp_ids],
        "secretVersions": [v for s in state["secrets"] if s["name"] == secret_name and not s["deleted"]
                           for v in s["versions"]],
        "deletedSecrets": [s for s in state["secrets"] if s["name"] == secret_name and s["deleted"]],
    }


# ------------------------------------------------------------------------------------------- settings
@contextmanager
def settings_override(**values: str | None) -> Iterator[None]:
    """Run the function app with some settings changed (None removes one); the runtime is rebuilt."""
    from registrations import wiring

    saved = {key: os.environ.get(key) for key in values}

    def apply(changes: dict[str, str | None]) -> None:
        for key, value in changes.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        wiring.reset()

    apply(values)
    try:
        yield
    finally:
        apply(saved)
