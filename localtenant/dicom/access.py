"""Who may do what at a DICOM service, and what CORS allows. No HTTP.

- Data actions per request: search and retrieve (GET, HEAD) are `read`, store (POST, PUT) is `write`, delete is
  `delete` (dicom-server's DataActions; Azure: Microsoft.HealthcareApis/workspaces/dicomservices/resources/*).
- Managed (Azure Health Data Services): the token's principal needs an Azure role on the DICOM service (or a
  scope above it) whose DICOM data actions include the one asked for: DICOM Data Reader reads, DICOM Data
  Owner reads, writes and deletes ("Configure Azure RBAC roles for Azure Health Data Services").
- Open source: the token's `roles` are matched by name against the server's roles.json ({"roles": [{name,
  dataActions, notDataActions, scopes}]}; microsoft/dicom-server, docs/how-to-guides/enable-authorization.md).
- CORS follows the service's corsConfiguration: an origin is allowed when listed (or "*"), a preflight's
  method and headers when listed (or "*").
"""
from __future__ import annotations

from typing import Any

ACTIONS = ("read", "write", "delete", "manageExtendedQueryTags", "export")
ROLE_KEYS = {"name", "dataActions", "notDataActions", "scopes"}
SIMPLE_HEADERS = {"accept", "accept-language", "content-language", "content-type"}


def action_for(method: str) -> str:
    return {"GET": "read", "HEAD": "read", "POST": "write", "PUT": "write", "DELETE": "delete"}.get(method, "")


def validate_roles(document: Any) -> dict[str, Any]:
    """A roles.json document, checked as the server checks it at start (ErrorValidatingRoles: unknown data
    actions, duplicate names, scopes other than "/")."""
    if not isinstance(document, dict) or not isinstance(document.get("roles"), list):
        raise ValueError('roles.json must be an object with a "roles" list')
    names: set[str] = set()
    for role in document["roles"]:
        if not isinstance(role, dict) or not {"name", "dataActions"} <= set(role) or set(role) - ROLE_KEYS - {"$schema"}:
            raise ValueError("each role has name and dataActions (and optionally notDataActions, scopes)")
        if not isinstance(role["name"], str) or not role["name"] or role["name"] in names:
            raise ValueError(f"role names are non-empty and unique: {role.get('name')!r}")
        names.add(role["name"])
        for key in ("dataActions", "notDataActions"):
            actions = role.get(key) or []
            if not isinstance(actions, list) or any(a != "*" and a not in ACTIONS for a in actions):
                raise ValueError(f"role {role['name']}: {key} must be among {', '.join(ACTIONS)} or *")
        if any(scope != "/" for scope in role.get("scopes") or ["/"]):
            raise ValueError(f'role {role["name"]}: the only scope is "/"')
    return document


def oss_allows(roles_document: dict[str, Any], token_roles: list[str], action: str) -> bool:
    for role in roles_document.get("roles") or []:
        if role["name"] not in token_roles:
            continue
        granted = set(ACTIONS) if "*" in role["dataActions"] else set(role["dataActions"])
        denied = set(ACTIONS) if "*" in (role.get("notDataActions") or []) else set(role.get("notDataActions") or [])
        if action in granted - denied:
            return True
    return False


def managed_allows(arm, principal_id: str, resource_id: str, action: str) -> bool:
    """Role assignments are read through ARM's replication delay, as Key Vault reads them."""
    return arm.has(principal_id, resource_id, lambda role: action in role.get("dicom", ()))


def allowed_origin(cors: dict[str, Any], origin: str | None) -> bool:
    return bool(origin) and ("*" in cors["origins"] or origin in cors["origins"])


def cors_headers(cors: dict[str, Any], origin: str) -> dict[str, str]:
    """Headers on an actual response to an allowed origin."""
    headers = {"Access-Control-Allow-Origin": "*" if "*" in cors["origins"] and not cors["allowCredentials"]
               else origin, "Vary": "Origin"}
    if cors["allowCredentials"]:
        headers["Access-Control-Allow-Credentials"] = "true"
    return headers


def preflight(cors: dict[str, Any], origin: str | None, method: str,
              request_headers: str) -> dict[str, str] | None:
    """The headers of a passing preflight, or None when the configuration does not allow it (the answer then
    carries no CORS headers and the browser blocks the request)."""
    if not allowed_origin(cors, origin):
        return None
    methods = {m.upper() for m in cors["methods"]}
    if "*" not in methods and method.upper() not in methods:
        return None
    asked = [h.strip() for h in request_headers.split(",") if h.strip()]
    allowed = {h.lower() for h in cors["headers"]}
    if "*" not in allowed and any(h.lower() not in allowed | SIMPLE_HEADERS for h in asked):
        return None
    headers = cors_headers(cors, origin or "")
    headers["Access-Control-Allow-Methods"] = method.upper()
    if asked:
        headers["Access-Control-Allow-Headers"] = ", ".join(asked)
    if cors["maxAge"] is not None:
        headers["Access-Control-Max-Age"] = str(cors["maxAge"])
    return headers
