"""Microsoft's own request/response examples, replayed against the local tenant.

Each file in `documented/` is one example from the Graph v1.0 reference or from the Key Vault / Azure RBAC
REST specs (the examples those reference pages are generated from): the documented request and the
documented response, with ids the tenant generates replaced by `{placeholders}`. Replaying one asserts:

- the status code is the documented one;
- every documented response field is present, with the same JSON type (integer and number apart), nested
  objects and array items recursively; extra fields are allowed (the docs shorten their responses);
- fields listed in `values` equal the documented value (after placeholders are filled in and the documented
  hosts are swapped for the local origins); `{?name}` in such a value matches one path segment;
- fields listed in `formats` have the documented shape (GUID, ISO 8601 UTC time, ...);
- `types` lists the few fields whose documented example value is one case of a wider documented type
  (an example showing a string where the resource page says "String, nullable", or one item in a
  collection that may be empty: `minItems`), each with its reason.

Paths are JSON-pointer-like: `attributes/enabled`, `value/0/id`, `@odata.context`.
"""
from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any, Callable

import pytest

from localtenant_helpers import mi_token

DOCUMENTED = Path(__file__).with_name("documented")
EXAMPLES = sorted(DOCUMENTED.glob("*.json"))
SOURCES = ("https://learn.microsoft.com/", "https://github.com/Azure/azure-rest-api-specs/")
AUDIENCES = {"https://graph.microsoft.com": "https://graph.microsoft.com",
             "https://myvault.vault.azure.net": "https://vault.azure.net",
             "https://management.azure.com": "https://management.azure.com/"}
FORMATS = {
    "guid": r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
    "datetime": r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,7})?Z",
    # Directory ids made of two or three GUIDs, base64url without padding (appRoleAssignment,
    # oAuth2PermissionGrant ids in the Graph examples are 43 characters).
    "base64url43": r"[A-Za-z0-9_-]{43}",
    "kvVersion": r"[0-9a-f]{32}",
}
SECRET_USER = "4633458b-17de-408a-b874-0445c86b69e6"  # Key Vault Secrets User


# -- setups: put the tenant in the state the example assumes; return the placeholders ------------------------

class Ctx:
    def __init__(self, lt, http, tokens: dict[str, str]) -> None:
        self.lt, self.http, self.tokens = lt, http, tokens
        self.hosts = {"https://graph.microsoft.com": lt.graph_endpoint,
                      "https://myvault.vault.azure.net": lt.vault_url,
                      "https://management.azure.com": lt.arm_endpoint}

    def call(self, doc_host: str, method: str, path: str, body: Any = None) -> Any:
        r = self.http.request(method, self.hosts[doc_host] + path, json=body,
                              headers={"Authorization": f"Bearer {self.tokens[doc_host]}"})
        assert r.status_code < 300, f"setup {method} {path}: {r.status_code} {r.text}"
        return r.json() if r.content else None

    def graph(self, method: str, path: str, body: Any = None) -> Any:
        return self.call("https://graph.microsoft.com", method, "/v1.0" + path, body)

    def vault(self, method: str, path: str, body: Any = None) -> Any:
        sep = "&" if "?" in path else "?"
        return self.call("https://myvault.vault.azure.net", method, f"{path}{sep}api-version=7.5", body)


def _application(c: Ctx, p: dict) -> dict[str, str]:
    unique = p.get("uniqueName") or f"doc-{uuid.uuid4().hex[:8]}"
    r = c.http.patch(f"{c.lt.graph_endpoint}/v1.0/applications(uniqueName='{unique}')",
                     json={"displayName": p.get("displayName", "Display name")},
                     headers={"Authorization": f"Bearer {c.tokens['https://graph.microsoft.com']}",
                              "Prefer": "create-if-missing"})
    assert r.status_code == 201, r.text
    app = r.json()
    return {"uniqueName": unique, "appObjectId": app["id"], "appId": app["appId"],
            "displayName": app["displayName"]}


def _password(c: Ctx, p: dict) -> dict[str, str]:
    ctx = _application(c, p)
    cred = c.graph("POST", f"/applications/{ctx['appObjectId']}/addPassword", {"passwordCredential": {}})
    return {**ctx, "keyId": cred["keyId"]}


def _service_principal(c: Ctx, p: dict) -> dict[str, str]:
    ctx = _application(c, p)
    sp = c.graph("POST", "/servicePrincipals", {"appId": ctx["appId"]})
    return {**ctx, "spId": sp["id"]}


def _role_target(c: Ctx, p: dict) -> dict[str, str]:
    seed = c.lt.seed
    return {"scope": seed.resource_group_id, "subscriptionId": seed.subscription_id,
            "assignmentName": str(uuid.uuid4()), "principalId": seed.user.object_id, "roleId": SECRET_USER}


def _role_assignment(c: Ctx, p: dict) -> dict[str, str]:
    ctx = _role_target(c, p)
    c.call("https://management.azure.com", "PUT", f"{ctx['scope']}/providers/Microsoft.Authorization/"
           f"roleAssignments/{ctx['assignmentName']}?api-version=2022-04-01",
           {"properties": {"roleDefinitionId": f"/subscriptions/{ctx['subscriptionId']}/providers/"
                           f"Microsoft.Authorization/roleDefinitions/{SECRET_USER}",
                           "principalId": ctx["principalId"], "principalType": "User"}})
    return ctx


def _secret(c: Ctx, p: dict) -> dict[str, str]:
    versions = [c.vault("PUT", f"/secrets/{p['name']}", {"value": "mysecretvalue", **p.get("body", {})})
                for _ in range(p.get("versions", 1))]
    return {"name": p["name"], "version": versions[-1]["id"].rsplit("/", 1)[1]}


def _deleted_secret(c: Ctx, p: dict) -> dict[str, str]:
    ctx = _secret(c, p)
    c.vault("DELETE", f"/secrets/{p['name']}")
    return ctx


def _secrets(c: Ctx, p: dict) -> dict[str, str]:
    for name in p["names"]:
        c.vault("PUT", f"/secrets/{name}", {"value": "mysecretvalue", "contentType": "plainText"})
    return {}


SETUPS: dict[str, Callable[[Ctx, dict], dict[str, str]]] = {
    "none": lambda c, p: dict(p),
    "newUniqueName": lambda c, p: {"uniqueName": f"doc-{uuid.uuid4().hex[:8]}"},
    "missingApplication": lambda c, p: {"appObjectId": str(uuid.uuid4())},
    "application": _application,
    "password": _password,
    "servicePrincipal": _service_principal,
    "appRoleAssignment": lambda c, p: {
        **_service_principal(c, p), "resourceId": c.lt.seed.api.object_id,
        "resourceDisplayName": "DICOM Registrations API", "appRoleId": c.lt.seed.api.roles["Registrations.Read"]},
    "permissionGrant": lambda c, p: {**_service_principal(c, p), "resourceId": c.lt.seed.first_party.graph.object_id},
    "roleTarget": _role_target,
    "roleAssignment": _role_assignment,
    "secret": _secret,
    "deletedSecret": _deleted_secret,
    "secrets": _secrets,
}


# -- comparison ------------------------------------------------------------------------------------------

def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}[type(value)]


def _fill(value: Any, ctx: dict[str, str], hosts: dict[str, str]) -> Any:
    """Documented hosts become local origins and `{name}` placeholders take the setup's values."""
    if isinstance(value, dict):
        return {k: _fill(v, ctx, hosts) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, ctx, hosts) for v in value]
    if not isinstance(value, str):
        return value
    for doc_host, local in hosts.items():
        if value.startswith(doc_host):
            value = local + value[len(doc_host):]
    return re.sub(r"\{(\w+)\}", lambda m: ctx[m.group(1)], value)


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, str) and "{?" in expected:
        parts = re.split(r"\{\?\w+\}", expected)
        return isinstance(actual, str) and re.fullmatch(r"[^/?&]+".join(map(re.escape, parts)), actual) is not None
    return expected == actual and kind(expected) == kind(actual)


def compare(example: dict, expected: Any, actual: Any, ctx: dict, hosts: dict, path: str = "") -> list[str]:
    problems = []
    key = path.lstrip("/")
    override = example.get("types", {}).get(key, {})
    allowed = override.get("allow") or [kind(expected)]
    if kind(expected) == "number":
        allowed = [*allowed, "integer"]
    if kind(actual) not in allowed:
        return [f"{key or '(body)'}: documented {'/'.join(allowed)}, got {kind(actual)} {actual!r:.80}"]
    if key in example.get("values", []):
        want = _fill(expected, ctx, hosts)
        if not _same(want, actual):
            problems.append(f"{key}: documented {want!r}, got {actual!r}")
    fmt = example.get("formats", {}).get(key)
    if fmt and actual is not None and not re.fullmatch(FORMATS.get(fmt, fmt), str(actual)):
        problems.append(f"{key}: not {fmt}: {actual!r}")
    if isinstance(expected, dict) and isinstance(actual, dict):
        for name, sub in expected.items():
            if name not in actual:
                problems.append(f"{path.lstrip('/')}/{name}".lstrip("/") + ": documented field missing")
            else:
                problems += compare(example, sub, actual[name], ctx, hosts, f"{path}/{name}")
    elif isinstance(expected, list) and isinstance(actual, list):
        if len(actual) < override.get("minItems", len(expected)):
            problems.append(f"{key}: documented {len(expected)} item(s), got {len(actual)}")
        for i, (sub_e, sub_a) in enumerate(zip(expected, actual)):
            problems += compare(example, sub_e, sub_a, ctx, hosts, f"{path}/{i}")
    return problems


# -- the replay ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokens(lt, http) -> dict[str, str]:
    return {doc_host: mi_token(lt, http, audience) for doc_host, audience in AUDIENCES.items()}


def test_enough_documented_examples():
    examples = [json.loads(p.read_text()) for p in EXAMPLES]
    assert len(examples) >= 10
    for e in examples:
        assert e["source"].startswith(SOURCES), e["source"]
        assert e["setup"]["step"] in SETUPS


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_documented_example(path: Path, lt, http, tokens):
    example = json.loads(path.read_text())
    c = Ctx(lt, http, tokens)
    ctx = SETUPS[example["setup"]["step"]](c, example["setup"].get("params", {}))
    request, response = example["request"], example["response"]
    url = _fill(request["url"], ctx, c.hosts)
    doc_host = next(h for h in AUDIENCES if request["url"].startswith(h))
    headers = {**request.get("headers", {}), "Authorization": f"Bearer {tokens[doc_host]}"}
    body = json.dumps(_fill(request["body"], ctx, c.hosts)) if "body" in request else None
    r = http.request(request["method"], url, data=body, headers=headers, allow_redirects=False)

    assert r.status_code == response["status"], f"{example['source']}: {r.status_code} {r.text}"
    if "body" not in response:
        assert r.content == b"", f"documented no body, got {r.text!r}"
        return
    problems = compare(example, response["body"], r.json(), ctx, c.hosts)
    assert not problems, f"{example['source']}\n  " + "\n  ".join(problems)
