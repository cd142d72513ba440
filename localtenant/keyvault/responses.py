"""Key Vault secret routes ("Key Vault REST API: Secrets"), challenge authentication and Azure RBAC.

- No token: 401 with `WWW-Authenticate: Bearer authorization="{authority}/{tenant}",
  resource="https://vault.azure.net"` ("Azure Key Vault authentication", challenge-based auth).
- A token the vault no longer accepts (expired on the tenant clock) from a client that declared the CP1
  capability (`xms_cc`) gets a CAE claims challenge (`error="insufficient_claims", claims=...`), which the SDK
  answers by asking for a fresh token with those claims ("Continuous access evaluation" for Key Vault).
- Data actions are checked against role assignments at the vault or the secret's own scope
  ("Provide access to Key Vault keys, certificates, and secrets with Azure RBAC").
"""
from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlencode

from starlette.responses import JSONResponse, Response

from ..entra.tokens import InvalidToken
from ..web import Req, ServiceSpec, json_response, routes as routes_table
from .exceptions import KeyVaultError, bad_parameter, from_fault, render

SPEC = ServiceSpec("keyvault", KeyVaultError, render, from_fault)
AUDIENCES = {"https://vault.azure.net", "cfa8b339-82a2-471a-a3c9-0fc0be7a4093"}
API_VERSIONS = {"2016-10-01", "7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01", "2026-04-01"}
ACTIONS = {"get": "Microsoft.KeyVault/vaults/secrets/getSecret/action",
           "read": "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
           "write": "Microsoft.KeyVault/vaults/secrets/setSecret/action"}


def _challenge(req: Req, extra: str = "") -> dict[str, str]:
    auth = f"{req.core.authority_host}/{req.core.tenant_id}"
    return {"WWW-Authenticate": f'Bearer authorization="{auth}", resource="https://vault.azure.net"{extra}'}


def _authorize(req: Req, need: str, name: str | None) -> None:
    version = req.query.get("api-version")
    if version not in API_VERSIONS:
        raise bad_parameter(f"The specified version ({version}) is not recognized. Consider using the latest "
                            "supported version (2026-04-01).")
    token = req.bearer()
    if token is None:
        raise KeyVaultError(401, "Unauthorized", "AKV10000: Request is missing a Bearer or PoP token.",
                            headers=_challenge(req))
    try:
        claims = req.core.issuer.validate(token, AUDIENCES)
    except InvalidToken as e:
        extra = ""
        if "expired" in str(e) and _capable(token):
            wanted = {"access_token": {"nbf": {"essential": True, "value": str(int(req.core.clock.now()))}}}
            encoded = base64.b64encode(json.dumps(wanted).encode()).decode()
            extra = f', error="insufficient_claims", claims="{encoded}"'
        raise KeyVaultError(401, "Unauthorized", f"AKV10022: {e}", headers=_challenge(req, extra)) from None
    scope = req.core.seed.vault_resource_id + (f"/secrets/{name}" if name else "")
    if not req.core.arm.has(claims["oid"], scope, lambda role: need in role.get("secrets", ())):
        raise KeyVaultError(403, "Forbidden", "Caller is not authorized to perform action on resource.\r\nIf role "
                            "assignments, deny assignments or role definitions were changed recently, please observe "
                            f"propagation time.\r\nCaller: appid={claims.get('appid') or claims.get('azp')};"
                            f"oid={claims['oid']}\r\nAction: '{ACTIONS[need]}'\r\nResource: '{scope.lower()}'\r\n"
                            "Assignment: (not found)\r\nDecisionReason: 'DeniedWithNoValidRBAC'\r\nVault: local;"
                            "location=local\r\n", inner="ForbiddenByRbac")


def _capable(token: str) -> bool:
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return False
    return "CP1" in (claims.get("xms_cc") or [])


def _secret_id(req: Req, name: str, version: str | None = None) -> str:
    return f"{req.core.vault_url}/secrets/{name}" + (f"/{version}" if version else "")


def _item(req: Req, entry: dict[str, Any], v: dict[str, Any], *, with_version: bool) -> dict[str, Any]:
    out = {"id": _secret_id(req, entry["name"], v["version"] if with_version else None),
           "attributes": v["attributes"]}
    for key in ("contentType", "tags"):
        if v.get(key) is not None:
            out[key] = v[key]
    return out


def _bundle(req: Req, entry, v, *, value: bool = True) -> dict[str, Any]:
    out = _item(req, entry, v, with_version=True)
    if value:
        out = {"value": v["_value"], **out}
    return out


def _deleted(req: Req, entry: dict[str, Any]) -> dict[str, Any]:
    return {"recoveryId": f"{req.core.vault_url}/deletedsecrets/{entry['name']}", **entry["deleted"],
            **_bundle(req, entry, entry["versions"][-1], value=False)}


def _page(req: Req, items: list[dict[str, Any]]) -> JSONResponse:
    try:
        top = int(req.query.get("maxresults") or 25)
        skip = int(base64.urlsafe_b64decode(req.query["$skiptoken"]).decode()) if "$skiptoken" in req.query else 0
    except ValueError:
        raise bad_parameter("Invalid maxresults or $skiptoken.") from None
    if not 1 <= top <= 25:
        raise bad_parameter("The value of maxresults must be between 1 and 25.")
    body: dict[str, Any] = {"value": items[skip:skip + top], "nextLink": None}
    if skip + top < len(items):
        params = {"api-version": req.query["api-version"], "maxresults": str(top),
                  "$skiptoken": base64.urlsafe_b64encode(str(skip + top).encode()).decode()}
        body["nextLink"] = f"{req.url.split('?', 1)[0]}?{urlencode(params)}"
    return json_response(body)


def _body(req: Req) -> Any:
    try:
        return req.json()
    except ValueError:
        raise bad_parameter("The request body is not valid JSON.") from None


def set_secret(req: Req):
    name = req.path_params["name"]
    _authorize(req, "write", name)
    return json_response(_bundle(req, *req.core.keyvault.set(name, _body(req))))


def get_secret(req: Req):
    name = req.path_params["name"]
    _authorize(req, "get", name)
    return json_response(_bundle(req, *req.core.keyvault.get(name, req.path_params.get("version"))))


def update_secret(req: Req):
    name = req.path_params["name"]
    _authorize(req, "write", name)
    entry, v = req.core.keyvault.update(name, req.path_params.get("version"), _body(req))
    return json_response(_bundle(req, entry, v, value=False))


def list_secrets(req: Req):
    _authorize(req, "read", None)
    return _page(req, [_item(req, e, e["versions"][-1], with_version=False) for e in req.core.keyvault.list()])


def list_versions(req: Req):
    name = req.path_params["name"]
    _authorize(req, "read", name)
    entry = req.core.keyvault.entry(name)
    return _page(req, [_item(req, entry, v, with_version=True) for v in entry["versions"]])


def delete_secret(req: Req):
    name = req.path_params["name"]
    _authorize(req, "write", name)
    return json_response(_deleted(req, req.core.keyvault.delete(name)))


def get_deleted(req: Req):
    name = req.path_params["name"]
    _authorize(req, "read", name)
    return json_response(_deleted(req, req.core.keyvault.get_deleted(name)))


def list_deleted(req: Req):
    _authorize(req, "read", None)
    items = []
    for e in req.core.keyvault.list(deleted=True):
        d = _deleted(req, e)
        d["id"] = _secret_id(req, e["name"])
        items.append(d)
    return _page(req, items)


def recover(req: Req):
    name = req.path_params["name"]
    _authorize(req, "write", name)
    entry = req.core.keyvault.recover(name)
    return json_response(_bundle(req, entry, entry["versions"][-1], value=False))


def purge(req: Req):
    name = req.path_params["name"]
    _authorize(req, "write", name)
    req.core.keyvault.purge(name)
    return Response(status_code=204)


def unknown(req: Req, allowed: list[str]) -> KeyVaultError:
    """A path Key Vault's secrets API does not have, or a method it does not take there."""
    if allowed:
        return KeyVaultError(405, "MethodNotAllowed", f"The requested method {req.method} is not allowed; "
                                f"this path takes {', '.join(allowed)}.")
    return KeyVaultError(404, "NotFound", f"The requested path {req.raw.url.path} was not found on this vault.")


def routes(core) -> list:
    return routes_table(core, SPEC, [
        ("/secrets", ["GET"], "keyvault.listSecrets", list_secrets),
        ("/secrets/{name}", ["PUT"], "keyvault.setSecret", set_secret),
        ("/secrets/{name}", ["GET"], "keyvault.getSecret", get_secret),
        ("/secrets/{name}", ["DELETE"], "keyvault.deleteSecret", delete_secret),
        ("/secrets/{name}/", ["GET"], "keyvault.getSecret", get_secret),
        ("/secrets/{name}/", ["PATCH"], "keyvault.updateSecret", update_secret),
        ("/secrets/{name}/versions", ["GET"], "keyvault.listSecretVersions", list_versions),
        ("/secrets/{name}/{version}", ["GET"], "keyvault.getSecret", get_secret),
        ("/secrets/{name}/{version}", ["PATCH"], "keyvault.updateSecret", update_secret),
        ("/deletedsecrets", ["GET"], "keyvault.listDeletedSecrets", list_deleted),
        ("/deletedsecrets/{name}", ["GET"], "keyvault.getDeletedSecret", get_deleted),
        ("/deletedsecrets/{name}", ["DELETE"], "keyvault.purgeDeletedSecret", purge),
        ("/deletedsecrets/{name}/recover", ["POST"], "keyvault.recoverDeletedSecret", recover),
    ])
