"""Test support shared by every suite (kept out of conftest.py so that it is imported once, as one module).

Fixtures live in tests/conftest.py; everything a test module needs from another one lives here (the token
clients pointed at the local tenant among them), so that no test module imports from a test module. A suite's
own machinery that no other suite uses stays with it (tests/openapi: the document readers and the workflow
engine; tests/localtenant, tests/devhost)."""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import re
import runpy
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import azure.functions as func
import httpx
import jwt
import msal
import requests
from azure.identity import ManagedIdentityCredential
from azure.keyvault.secrets import SecretClient

from registrations import http

FUNCTION_KEY = "e2e-function-key"
MASTER_KEY = "e2e-master-key"
MANAGED_AUDIENCE = "https://dicom.healthcareapis.azure.com"
PROBLEM_TYPE_BASE = "urn:dicom-registrations:problem:"

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
    token = client_credentials_token(tenant, client.app_id, client.secret,
                                     f"{tenant.seed.api.identifier_uri}/.default")
    ACQUIRED_TOKENS.append(token)
    return token


def create(api, body: dict, expected: int = 201) -> dict:
    response = api.post("/registrations", json=body)
    assert response.status_code == expected, response.text
    return response.json()


# --------------------------------------------------------------------- the HTTP functions, called directly
def live_http_functions() -> dict[str, tuple[str, frozenset[str], str]]:
    """name -> (route, methods, auth level) of every HTTP function the app serves."""
    # A fresh FunctionApp from the same file: indexing one app twice is an error in azure-functions, and the
    # session's local host indexes `function_app.app` itself.
    app = runpy.run_path(str(Path(__file__).resolve().parents[1] / "function_app.py"))["app"]
    found = {}
    for function in app.get_functions():
        trigger = function.get_trigger().get_dict_repr()
        if str(getattr(trigger.get("type"), "value", trigger.get("type"))).lower() != "httptrigger":
            continue
        methods = frozenset(str(getattr(m, "value", m)).upper() for m in trigger.get("methods") or [])
        level = str(getattr(trigger.get("authLevel"), "value", trigger.get("authLevel"))).lower()
        name = function.get_function_name()
        found[name] = (trigger.get("route") or name, methods, level)
    return found


@functools.cache
def http_functions() -> dict[Callable[[func.HttpRequest], func.HttpResponse], tuple[str, str, str]]:
    """Every HTTP function of registrations.http -> (method, route template, auth level), as the app
    registers it: how a direct call reaches a function, read from the same place the host reads it."""
    found = {}
    for name, (route, methods, level) in live_http_functions().items():
        (method,) = methods
        found[getattr(http, name)] = (method, route, level)
    return found


FUNCTIONS_BASE = "http://localhost:7071/api"
_NO_JSON = object()


# Route parameters other than {name}, when a test does not give them.
ROUTE_DEFAULTS = {"format": "json"}


def http_request(method: str, route: str, name: str | None = None, *, token: str | None = None,
                 headers: Mapping[str, str] | None = None, params: Mapping[str, str] | None = None,
                 body: bytes = b"", json_body: Any = _NO_JSON,
                 route_params: Mapping[str, str] | None = None) -> func.HttpRequest:
    """The func.HttpRequest the Functions host would hand a function: `route` is the function's route
    template ("registrations/{name}/config/{format}"), filled in with `name` and `route_params` (else
    ROUTE_DEFAULTS); the query is in the URL and in params."""
    all_headers = dict(headers or {})
    if token:
        all_headers["Authorization"] = f"Bearer {token}"
    if json_body is not _NO_JSON:
        body = json.dumps(json_body).encode()
        all_headers.setdefault("Content-Type", "application/json")
    given = dict(route_params or {})
    route_params = {**{k: v for k, v in ROUTE_DEFAULTS.items() if "{" + k + "}" in route}, **given}
    if name is not None:
        route_params["name"] = name
    url = f"{FUNCTIONS_BASE}/{route.format(**route_params)}"
    if params:
        url += "?" + urlencode(params)
    return func.HttpRequest(method=method, url=url, headers=all_headers, params=dict(params or {}),
                            route_params=route_params, body=body)


def call_function(function: Callable[[func.HttpRequest], func.HttpResponse], name: str | None = None,
                  **request: Any) -> func.HttpResponse:
    """Call one of registrations.http's functions in this process, as the Azure Functions samples do, with the
    request `http_request` builds for its route (`name` fills the route's {name}). There is no function key:
    checking it is the host's job. The response is kept like an api_client's, so the session-wide checks see
    it. Tests use the `call` fixture, which applies the app's settings first."""
    method, route, _level = http_functions()[function]
    req = http_request(method, route, name, **request)
    response = function(req)
    _keep(method, urlsplit(req.url).path, response.status_code, response.mimetype or "",
          response.get_body().decode("utf-8", "replace"))
    return response


def json_of(response: func.HttpResponse) -> Any:
    return json.loads(response.get_body())


def problem(response: func.HttpResponse, status: int, kind: str | None = None) -> dict:
    """The problem+json body of a function's answer, after checking it says what is wrong (and, given `kind`,
    that its type is that problem type's URI)."""
    assert response.status_code == status, response.get_body()
    assert response.mimetype == "application/problem+json"
    body = json_of(response)
    assert body["status"] == status and body["type"].startswith(PROBLEM_TYPE_BASE)
    assert body["title"] and body["detail"]
    if kind is not None:
        assert body["type"] == PROBLEM_TYPE_BASE + kind, body
    return body


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


def path_regex(template: str) -> re.Pattern[str]:
    """A route template ("/registrations/{name}") as a regex over request paths."""
    return re.compile("^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template)) + "$")


# ------------------------------------------------------- unmodified public clients pointed at the local tenant
def ca_context(ca_file: str) -> ssl.SSLContext:
    """What httpx's `verify=` takes to trust the local CA (a path there is deprecated)."""
    return ssl.create_default_context(cafile=ca_file)


def ca_session(ca_file: str, headers: dict[str, str] | None = None) -> requests.Session:
    """A requests session for msal that trusts the local CA. REQUESTS_CA_BUNDLE in the environment would
    otherwise override msal's `verify=` (requests' merge_environment_settings), so the session ignores the
    environment."""
    session = requests.Session()
    session.trust_env = False
    session.verify = ca_file
    if headers:
        session.headers.update(headers)
    return session


def confidential_app(tenant: Any, client_id: str, credential: Any, **kwargs: Any) -> msal.ConfidentialClientApplication:
    return msal.ConfidentialClientApplication(
        client_id, client_credential=credential, authority=tenant.authority, instance_discovery=False,
        http_client=ca_session(tenant.ca_file), token_cache=msal.TokenCache(), **kwargs,
    )


def public_app(tenant: Any, client_id: str, *, origin: str | None = None) -> msal.PublicClientApplication:
    headers = {"Origin": origin} if origin else None
    return msal.PublicClientApplication(
        client_id, authority=tenant.authority, instance_discovery=False,
        http_client=ca_session(tenant.ca_file, headers), token_cache=msal.TokenCache(),
    )


def client_credentials_token(tenant: Any, client_id: str, secret: str, scope: str) -> str:
    result = confidential_app(tenant, client_id, secret).acquire_token_for_client([scope])
    assert "access_token" in result, result
    return result["access_token"]


def follow_authorize(tenant: Any, auth_uri: str, **person: Any) -> dict[str, str]:
    """Play the browser: the seeded user signs in on the authorize URL's pages (account, password; consent as
    `person` says) and this reads the code and state (or the error) off the redirect to the client."""
    return tenant.sign_in(auth_uri, **person).query


def user_graph_token(tenant: Any, upn: str, scopes: tuple[str, ...] = (
        "Application.ReadWrite.All", "Directory.Read.All")) -> str:
    """A Graph token for a user signed in through the Azure CLI's public client (docs/local-tenant.md,
    "A member user"): delegated, `scp` = the scopes asked for, as `az ad app create` gets one."""
    cli = public_app(tenant, tenant.seed.azure_cli.app_id)
    flow = cli.initiate_auth_code_flow([f"https://graph.microsoft.com/{s}" for s in scopes],
                                       redirect_uri=tenant.seed.azure_cli.redirect_uri, login_hint=upn)
    password = next(u.password for u in (tenant.seed.user, tenant.seed.member) if u.upn == upn)
    result = cli.acquire_token_by_auth_code_flow(flow, follow_authorize(tenant, flow["auth_uri"], user=upn,
                                                                        password=password))
    assert "access_token" in result, result
    return result["access_token"]


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


# ------------------------------------------------------------------------------------- DICOMweb clients
def dicom_instance(patient: str = "LOCAL^TEST", **uids: str) -> Any:
    """A small, valid Secondary Capture instance made with pydicom (4x4 pixels, 8 bits), with fresh UIDs
    unless given (StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID). It is a Part 10 file (preamble, DICM
    prefix): pydicom writes a dataset made in memory without them unless it has a preamble."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    ds = FileDataset(None, {}, file_meta=FileMetaDataset(), preamble=b"\0" * 128)
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.StudyInstanceUID = uids.get("StudyInstanceUID") or generate_uid()
    ds.SeriesInstanceUID = uids.get("SeriesInstanceUID") or generate_uid()
    ds.SOPInstanceUID = uids.get("SOPInstanceUID") or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName, ds.PatientID, ds.Modality = patient, patient.split("^")[0], "OT"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", "", "1"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows = ds.Columns = 4
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = bytes(range(16))
    return ds


def dicomweb(base_url: str, token: str, ca_file: str, **headers: str) -> Any:
    """dicomweb-client as a user would build it from a registration's configuration: the DICOM base URL
    and a requests session carrying the bearer token (and trusting the local CA, environment ignored)."""
    from dicomweb_client.api import DICOMwebClient

    session = ca_session(ca_file, {"Authorization": f"Bearer {token}", **headers})
    return DICOMwebClient(url=base_url, session=session)


def deploy_oss_dicom(tenant, resource_registration: dict) -> None:
    """Configure the local open-source DICOM server from its resource registration, as its operator would:
    the Audience, Authority and roles.json the registration returns."""
    config = resource_registration["config"]
    settings = config["dicomServerSettings"]
    tenant.configure_oss_dicom(audience=settings["DicomServer__Security__Authentication__Audience"],
                               authority=settings["DicomServer__Security__Authentication__Authority"],
                               roles=config["rolesJson"])


# ------------------------------------------------------------------------ ARM as the product's identity
def arm_call(tenant, method: str, path: str, api_version: str = "2022-04-01", **kwargs):
    """ARM as the product's managed identity (RBAC Administrator on the group, CORS editor on the service)."""
    token = ManagedIdentityCredential().get_token("https://management.azure.com/.default").token
    return ca_session(tenant.ca_file, {"Authorization": f"Bearer {token}"}).request(
        method, f"{tenant.arm_endpoint}{quote(path)}", params={"api-version": api_version}, **kwargs)


def arm_put(tenant, path: str, body: dict) -> None:
    response = arm_call(tenant, "PUT", path, json=body)
    assert response.status_code == 201, response.text


def allow_origin(tenant, origin: str) -> None:
    """Add an origin to the DICOM service's CORS configuration, as an operator would in the portal."""
    resource = arm_call(tenant, "GET", tenant.seed.dicom_resource_id, "2024-03-31")
    assert resource.status_code == 200, resource.text
    body = resource.json()
    cors = body["properties"]["corsConfiguration"]
    cors.update(origins=sorted(set(cors["origins"]) | {origin}), methods=sorted(set(cors["methods"]) | {"GET"}),
                headers=sorted(set(cors["headers"]) | {"authorization"}))
    written = arm_call(tenant, "PUT", tenant.seed.dicom_resource_id, "2024-03-31", json=body)
    assert written.status_code == 202, written.text  # a long-running operation (docs/local-tenant.md)
    until_done(tenant, written.headers["Azure-AsyncOperation"])


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll `condition` until it returns something true (and return that), at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def until_done(tenant, operation: str, within: float = 30.0) -> None:
    """Poll a long-running ARM operation (its Azure-AsyncOperation URL) until it ends, at most `within` s."""
    path = urlsplit(operation).path
    deadline = time.monotonic() + within
    while (status := arm_call(tenant, "GET", path, "2024-03-31").json()["status"]) not in ("Succeeded", "Failed"):
        assert time.monotonic() < deadline, f"the operation is still {status}"
        time.sleep(0.1)
    assert status == "Succeeded"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_base_port() -> int:
    """A base whose next seven ports (the tenant's origins) are free now."""
    for _ in range(50):
        base = free_port()
        probes = [socket.socket() for _ in range(7)]
        try:
            for offset, probe in enumerate(probes, start=1):
                probe.bind(("127.0.0.1", base + offset))
            return base
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise AssertionError("no seven free ports in a row")
