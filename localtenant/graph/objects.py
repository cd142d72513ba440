"""The shapes of Graph's directory objects: table names, how each object is made, merged and shown. No HTTP
and no behaviour: the backend (backend.py) and its parts (backend_*.py, policies.py) use these, and import
nothing from one another but backend.py.

Objects are plain dicts. Internal bookkeeping lives under keys starting with "_" (owners, visibility time,
password hashes) and is never rendered (`public`). Shapes follow the Graph v1.0 resource pages (application,
passwordCredential, keyCredential, federatedIdentityCredential, servicePrincipal, appRoleAssignment,
oAuth2PermissionGrant).
"""
from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import secrets
import string
import uuid
from typing import Any

from cryptography import x509

from . import validation
from .exceptions import bad_request

APPS = "applications"
Address = tuple[str, str]  # ("id" | "uniqueName" | "appId", value)
PASSWORD_LIFETIME = 2 * 365 * 24 * 3600  # addPassword default: two years
INFO = ("termsOfServiceUrl", "supportUrl", "privacyStatementUrl", "marketingUrl", "logoUrl")
# Properties Graph returns on every application even when unset: the full-object example of "Upsert
# application" shows them (null or empty), and the v1.0 application resource's JSON representation lists the
# rest (`logo` is a stream, never in the JSON): an application nobody certified, verified or disabled.
APP_DEFAULTS: dict[str, Any] = {
    "applicationTemplateId": None, "isDeviceOnlyAuthSupported": None, "addIns": [], "samlMetadataUrl": None,
    "tokenEncryptionKeyId": None, "windows": None,
    "parentalControlSettings": {"countriesBlockedForMinors": [], "legalAgeGroupRule": "Allow"},
    "authenticationBehaviors": None, "certification": None, "createdByAppId": None,
    "disabledByMicrosoftStatus": None, "managerApplications": [], "nativeAuthenticationApisEnabled": None,
    "oauth2RequiredPostResponse": False, "requestSignatureVerification": None,
    "servicePrincipalLockConfiguration": None,
    "verifiedPublisher": {"displayName": None, "verifiedPublisherId": None, "addedDateTime": None},
}
_SECRET_ALPHABET = string.ascii_letters + string.digits + "_-.~"


def iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_precise(ts: float) -> str:
    """A creation time as Graph writes it, with seven fractional digits ("Create application" and
    "Upsert application" examples: "2019-09-17T19:10:35.2742618Z"), so objects made in one second keep
    their order."""
    whole = int(ts)
    return f"{iso(whole)[:-1]}.{min(int((ts - whole) * 10_000_000), 9_999_999):07d}Z"


def parse_iso(value: str, prop: str) -> float:
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError):
        raise bad_request(f"Invalid value specified for property '{prop}'.") from None


def public(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def defaults(values: dict[str, Any]) -> dict[str, Any]:
    """Fresh containers per rendering, so a caller mutating one response cannot change the defaults."""
    return copy.deepcopy(values)


def new_application(*, now: float, visible_at: float, owner: str | None, tenant_id: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()), "appId": str(uuid.uuid4()), "displayName": None, "uniqueName": None,
        "description": None, "notes": None, "tags": [], "signInAudience": "AzureADMyOrg",
        "createdDateTime": iso_precise(now), "deletedDateTime": None, "publisherDomain": "local.test",
        "identifierUris": [], "isFallbackPublicClient": None, "groupMembershipClaims": None,
        "serviceManagementReference": None, "info": dict.fromkeys(INFO), "optionalClaims": None,
        "api": {"requestedAccessTokenVersion": None, "acceptMappedClaims": None, "knownClientApplications": [],
                "oauth2PermissionScopes": [], "preAuthorizedApplications": []},
        "appRoles": [], "requiredResourceAccess": [], "keyCredentials": [], "passwordCredentials": [],
        "publicClient": {"redirectUris": []}, "spa": {"redirectUris": []},
        "web": {"homePageUrl": None, "logoutUrl": None, "redirectUris": [], "redirectUriSettings": [],
                "implicitGrantSettings": {"enableAccessTokenIssuance": False, "enableIdTokenIssuance": False}},
        "_owners": [owner] if owner else [], "_createdBy": owner, "_visibleAt": visible_at, "_fics": [],
        "_tenant": tenant_id,
    }


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """PATCH semantics: complex properties are merged one level down, collections are replaced."""
    for key, value in patch.items():
        if key.startswith("@odata") or key == "id":
            continue
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            target[key] = {**target[key], **value}
        else:
            target[key] = value


def render_application(app: dict[str, Any]) -> dict[str, Any]:
    out = {**defaults(APP_DEFAULTS), **public(app)}
    out["info"] = {**dict.fromkeys(INFO), **(out.get("info") or {})}
    out["passwordCredentials"] = [{**public(p), "secretText": None} for p in app["passwordCredentials"]]
    out["keyCredentials"] = [{**public(k), "key": None} for k in app["keyCredentials"]]
    return out


def new_password(body: dict[str, Any], *, now: float, visible_at: float) -> tuple[dict[str, Any], str]:
    """A password credential and its secretText, which is shown once and stored only as a salted hash."""
    secret = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(3)) + "8Q~" + \
        "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(34))
    start = parse_iso(body["startDateTime"], "startDateTime") if body.get("startDateTime") else now
    end = parse_iso(body["endDateTime"], "endDateTime") if body.get("endDateTime") else start + PASSWORD_LIFETIME
    if end <= start:
        raise bad_request("Invalid value specified for property 'endDateTime' of resource 'PasswordCredential'.")
    salt = secrets.token_hex(8)
    cred = {"customKeyIdentifier": None, "displayName": body.get("displayName"), "endDateTime": iso(end),
            "hint": secret[:3], "keyId": str(uuid.uuid4()), "secretText": None, "startDateTime": iso(start),
            "_salt": salt, "_hash": password_hash(salt, secret), "_visibleAt": visible_at}
    return cred, secret


def password_hash(salt: str, secret: str) -> str:
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def new_key_credential(body: dict[str, Any], existing: dict[str, dict], *, visible_at: float) -> dict[str, Any]:
    """A keyCredential from a PATCH body entry; an entry naming an existing keyId without `key` keeps it."""
    key_id = body.get("keyId")
    if key_id in existing and not body.get("key"):
        return existing[key_id]
    try:
        der = base64.b64decode(body["key"])
        cert = x509.load_der_x509_certificate(der)
    except (KeyError, TypeError, ValueError):
        raise bad_request("Invalid value specified for property 'key' of resource 'KeyCredential'.") from None
    thumb = hashlib.sha1(der).digest()
    return {"customKeyIdentifier": base64.b64encode(thumb).decode(), "displayName": body.get("displayName")
            or cert.subject.rfc4514_string(), "endDateTime": iso(cert.not_valid_after_utc.timestamp()),
            "key": body["key"], "keyId": key_id or str(uuid.uuid4()),
            "startDateTime": iso(cert.not_valid_before_utc.timestamp()), "type": body.get("type",
            "AsymmetricX509Cert"), "usage": body.get("usage", "Verify"), "_visibleAt": visible_at,
            "_x5t": base64.urlsafe_b64encode(thumb).rstrip(b"=").decode(),
            "_x5t256": base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()}


def new_fic(body: Any, *, visible_at: float) -> dict[str, Any]:
    body = validation.check_fic(body)
    return {"id": str(uuid.uuid4()), "name": body["name"], "issuer": body["issuer"], "subject": body["subject"],
            "audiences": body["audiences"], "description": body.get("description"), "_visibleAt": visible_at}


SPS, USERS, GROUPS = "servicePrincipals", "users", "groups"
ASSIGNMENTS, GRANTS = "appRoleAssignments", "oauth2PermissionGrants"
NO_ROLE = "00000000-0000-0000-0000-000000000000"  # the default access role of appRoleAssignment
PUBLISHER_NAME = "Local Tenant"  # the tenant's display name: Graph's publisherName for the tenant's own apps
# Properties Graph returns on every service principal even when unset: the full-object examples of "Create
# servicePrincipal" and "Get servicePrincipal" show them (null or empty).
SP_DEFAULTS: dict[str, Any] = {
    "addIns": [], "alternativeNames": [], "disabledByMicrosoftStatus": None, "endpoints": [], "homepage": None,
    "logoutUrl": None, "replyUrls": [], "keyCredentials": [], "passwordCredentials": [], "publisherName": None,
    "resourceSpecificApplicationPermissions": [], "signInAudience": "AzureADMyOrg", "tokenEncryptionKeyId": None,
    "notificationEmailAddresses": [], "preferredSingleSignOnMode": None,
    "verifiedPublisher": {"displayName": None, "verifiedPublisherId": None, "addedDateTime": None},
}


def new_service_principal(app: dict[str, Any] | None, *, app_id: str, now: float, visible_at: float,
                          owner: str | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    sp = {"id": str(uuid.uuid4()), "appId": app_id, "accountEnabled": True, "appDisplayName": None,
          "displayName": None, "appOwnerOrganizationId": app.get("_tenant") if app else None,
          "servicePrincipalType": "Application", "servicePrincipalNames": [app_id], "tags": [],
          "appRoles": [], "oauth2PermissionScopes": [], "appRoleAssignmentRequired": False,
          "createdDateTime": iso(now), "deletedDateTime": None, "notes": None, "description": None,
          "_owners": [owner] if owner else [], "_createdBy": owner, "_visibleAt": visible_at}
    sp.update(extra or {})
    return sp


def render_service_principal(sp: dict[str, Any], app: dict[str, Any] | None) -> dict[str, Any]:
    """A service principal mirrors its application's names, roles, scopes, audience, URLs and info (Graph
    keeps them in sync); one of this tenant's apps is published by this tenant."""
    out = {**defaults(SP_DEFAULTS), "info": dict.fromkeys(INFO), **public(sp)}
    if app is not None:
        web = app.get("web") or {}
        out.update(appDisplayName=app["displayName"], displayName=app["displayName"],
                   appRoles=app["appRoles"], oauth2PermissionScopes=app["api"]["oauth2PermissionScopes"],
                   servicePrincipalNames=list(dict.fromkeys([app["appId"], *app["identifierUris"]])),
                   signInAudience=app["signInAudience"], homepage=web.get("homePageUrl"),
                   logoutUrl=web.get("logoutUrl"), replyUrls=list(web.get("redirectUris") or []),
                   info={**dict.fromkeys(INFO), **(app.get("info") or {})},
                   publisherName=PUBLISHER_NAME)
    return out


def _guid_b64(*guids: str) -> str:
    return base64.urlsafe_b64encode(b"".join(uuid.UUID(g).bytes_le for g in guids)).rstrip(b"=").decode()


def new_assignment(principal: dict[str, Any], resource: dict[str, Any], role_id: str, principal_type: str, *,
                   now: float, visible_at: float, unique: str | None = None) -> dict[str, Any]:
    """appRoleAssignment ids as Graph shows them: base64url (no padding) of the principal's object id
    (little-endian GUID bytes) and a second GUID, 43 characters."""
    return {"id": _guid_b64(principal["id"], unique or str(uuid.uuid4())), "appRoleId": role_id,
            "createdDateTime": iso(now), "deletedDateTime": None,
            "principalDisplayName": principal.get("displayName"), "principalId": principal["id"],
            "principalType": principal_type, "resourceDisplayName": resource.get("displayName"),
            "resourceId": resource["id"], "_visibleAt": visible_at}


def new_grant(client_id: str, resource_id: str, consent_type: str, principal_id: str | None, scope: str, *,
              visible_at: float) -> dict[str, Any]:
    """oAuth2PermissionGrant ids as Graph shows them: base64url of clientId and resourceId (and principalId
    for a Principal grant); the "Create oAuth2PermissionGrant" example's id decodes to its clientId and
    resourceId."""
    return {"id": _guid_b64(client_id, resource_id, *([principal_id] if principal_id else [])),
            "clientId": client_id, "consentType": consent_type, "principalId": principal_id,
            "resourceId": resource_id, "scope": scope, "_visibleAt": visible_at}
