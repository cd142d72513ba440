"""Body validation for the objects the product writes, with Graph's messages.

Graph answers 400 for a property the type does not declare ("Property 'x' does not exist as a declared
property or extension property."), for read-only properties such as passwordCredentials (which only
addPassword may set), and for values of the wrong type.
"""
from __future__ import annotations

import base64
import re
import uuid
from typing import Any

from .exceptions import GraphError, bad_request

APPLICATION_WRITABLE = {
    "displayName", "uniqueName", "signInAudience", "tags", "notes", "description", "web", "spa",
    "publicClient", "isFallbackPublicClient", "identifierUris", "api", "appRoles", "requiredResourceAccess",
    "keyCredentials", "info", "optionalClaims", "groupMembershipClaims", "serviceManagementReference",
}
APPLICATION_READ_ONLY = {"id", "appId", "passwordCredentials", "createdDateTime", "deletedDateTime",
                         "publisherDomain", "certification", "createdByAppId", "disabledByMicrosoftStatus",
                         "verifiedPublisher"}
SIGN_IN_AUDIENCES = {"AzureADMyOrg", "AzureADMultipleOrgs", "AzureADandPersonalMicrosoftAccount",
                     "PersonalMicrosoftAccount"}
_SHAPES: dict[str, set[str]] = {
    "web": {"redirectUris", "homePageUrl", "logoutUrl", "implicitGrantSettings", "redirectUriSettings"},
    "spa": {"redirectUris"},
    "publicClient": {"redirectUris"},
    "api": {"requestedAccessTokenVersion", "oauth2PermissionScopes", "preAuthorizedApplications",
            "knownClientApplications", "acceptMappedClaims"},
}
_ROLE_KEYS = {"id", "value", "displayName", "description", "allowedMemberTypes", "isEnabled", "origin"}
_SCOPE_KEYS = {"id", "value", "type", "isEnabled", "adminConsentDisplayName", "adminConsentDescription",
               "userConsentDisplayName", "userConsentDescription", "origin"}
_KEY_KEYS = {"keyId", "type", "usage", "key", "displayName", "startDateTime", "endDateTime",
             "customKeyIdentifier"}


def invalid(prop: str, detail: str = "") -> GraphError:
    return bad_request(f"Invalid value specified for property '{prop}' of resource 'Application'.{detail}")


def _declared(obj: dict[str, Any], allowed: set[str]) -> None:
    for key in obj:
        if key not in allowed and not key.startswith("@odata"):
            raise bad_request(f"Property '{key}' does not exist as a declared property or extension property.")


def _check_keys(obj: Any, allowed: set[str], where: str) -> None:
    if not isinstance(obj, dict):
        raise invalid(where)
    _declared(obj, allowed)


def _payload(body: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("Empty Payload. JSON content expected.")
    _declared(body, allowed)
    return body


def check_body(body: Any, allowed: set[str], required: set[str], resource: str) -> dict[str, Any]:
    """A create or update body of a service principal, app role assignment or permission grant."""
    _payload(body, allowed)
    for key in required:
        if not body.get(key):
            raise bad_request(f"Property '{key}' of resource '{resource}' is required and cannot be null.")
    return body


def check_fic(body: Any) -> dict[str, Any]:
    _payload(body, {"name", "issuer", "subject", "audiences", "description", "id"})
    for key in ("name", "issuer", "subject"):
        if not isinstance(body.get(key), str) or not body[key]:
            raise bad_request(f"Property '{key}' is required and cannot be null or empty.")
    audiences = body.get("audiences")
    if not isinstance(audiences, list) or len(audiences) != 1 or not isinstance(audiences[0], str):
        # Graph: audiences is a single-valued collection; api://AzureADTokenExchange is the recommended value.
        raise bad_request("Invalid value specified for property 'audiences' of resource "
                          "'FederatedIdentityCredential'.")
    return body


def _strings(value: Any, prop: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid(prop)
    return value


def _guid(value: Any, prop: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise invalid(prop) from None


def _redirect_uris(value: Any, prop: str, *, https_only: bool) -> None:
    for uri in _strings(value, prop):
        # Entra: redirect URIs must be https, except http://localhost (and loopback) for local development.
        ok = uri.startswith("https://") or re.match(r"^http://(localhost|127\.0\.0\.1)(:\d+)?(/|$)", uri)
        if https_only and not ok or not https_only and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", uri):
            raise invalid(prop)


def _entitlements(items: Any, prop: str, keys: set[str]) -> None:
    if not isinstance(items, list):
        raise invalid(prop)
    seen: set[str] = set()
    for item in items:
        _check_keys(item, keys, prop)
        _guid(item.get("id"), f"{prop}.id")
        value = item.get("value")
        if value is not None and (not isinstance(value, str) or value in seen):
            raise bad_request(f"The {prop} value '{value}' is not unique or not valid.")
        seen.add(value)
        if prop == "appRoles":
            types = _strings(item.get("allowedMemberTypes", []), "allowedMemberTypes")
            if not types or set(types) - {"User", "Application"}:
                raise invalid("allowedMemberTypes")
        if prop == "oauth2PermissionScopes" and item.get("type", "User") not in ("User", "Admin"):
            raise invalid("type")


def check_key_credential(cred: Any) -> None:
    _check_keys(cred, _KEY_KEYS, "keyCredentials")
    if cred.get("type", "AsymmetricX509Cert") not in ("AsymmetricX509Cert", "X509CertAndPassword"):
        raise bad_request("Invalid value specified for property 'type' of resource 'KeyCredential'.")
    if cred.get("usage", "Verify") not in ("Verify", "Sign"):
        raise bad_request("Invalid value specified for property 'usage' of resource 'KeyCredential'.")
    if cred.get("key") is not None:
        try:
            base64.b64decode(cred["key"], validate=True)
        except ValueError:
            raise bad_request("Invalid value specified for property 'key' of resource 'KeyCredential'.") from None


def check_application(body: Any, *, creating: bool) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("Empty Payload. JSON content expected.")
    for key in body:
        if key in APPLICATION_READ_ONLY and key != "id":
            raise bad_request(f"Property '{key}' is read-only and cannot be set.")
        if key not in APPLICATION_WRITABLE and key != "id" and not key.startswith("@odata"):
            raise bad_request(f"Property '{key}' does not exist as a declared property or extension property.")
    if creating and not body.get("displayName"):
        raise bad_request("Property 'displayName' is required and cannot be null or empty.")
    for key in ("displayName", "uniqueName", "notes", "description", "serviceManagementReference"):
        if key in body and body[key] is not None and not isinstance(body[key], str):
            raise invalid(key)
    if "signInAudience" in body and body["signInAudience"] not in SIGN_IN_AUDIENCES:
        raise invalid("signInAudience")
    if "tags" in body:
        _strings(body["tags"], "tags")
    if "isFallbackPublicClient" in body and not isinstance(body["isFallbackPublicClient"], (bool, type(None))):
        raise invalid("isFallbackPublicClient")
    for prop, allowed in _SHAPES.items():
        if body.get(prop) is not None:
            _check_keys(body[prop], allowed, prop)
    for prop in ("web", "spa", "publicClient"):
        if body.get(prop) and "redirectUris" in body[prop]:
            _redirect_uris(body[prop]["redirectUris"], "redirectUris", https_only=prop != "publicClient")
    if "identifierUris" in body:
        for uri in _strings(body["identifierUris"], "identifierUris"):
            if not re.match(r"^(api|https?|urn|ms-appx):", uri):
                raise invalid("identifierUris")
    api = body.get("api") or {}
    if api.get("requestedAccessTokenVersion") not in (None, 1, 2):
        raise invalid("requestedAccessTokenVersion")
    if "oauth2PermissionScopes" in api:
        _entitlements(api["oauth2PermissionScopes"], "oauth2PermissionScopes", _SCOPE_KEYS)
    if "appRoles" in body:
        _entitlements(body["appRoles"], "appRoles", _ROLE_KEYS)
    for rra in body.get("requiredResourceAccess") or []:
        _check_keys(rra, {"resourceAppId", "resourceAccess"}, "requiredResourceAccess")
        for access in rra.get("resourceAccess") or []:
            _check_keys(access, {"id", "type"}, "resourceAccess")
            if access.get("type") not in ("Scope", "Role"):
                raise invalid("resourceAccess.type")
    for cred in body.get("keyCredentials") or []:
        check_key_credential(cred)
    return body


def check_enabled_entitlements_kept(old: list[dict], new: list[dict], prop: str) -> None:
    """Graph refuses to remove or change an entitlement that is still enabled: disable it first
    (CannotDeleteOrUpdateEnabledEntitlement)."""
    new_by_id = {item.get("id"): item for item in new}
    for item in old:
        if not item.get("isEnabled", True):
            continue
        kept = new_by_id.get(item["id"])
        if kept is None or kept.get("value") != item.get("value"):
            raise bad_request("Permission (scope or role) cannot be deleted or updated unless disabled first.",
                             code="CannotDeleteOrUpdateEnabledEntitlement")
