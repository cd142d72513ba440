"""Application objects and their credentials: how each is made and shown, upsert by uniqueName, CRUD,
addPassword/removePassword, keyCredentials by PATCH, federated identity credentials. No HTTP.

Objects are plain dicts. Internal bookkeeping lives under keys starting with "_" (owners, visibility time,
password hashes) and is never rendered (`public`). Shapes follow the Graph v1.0 resource pages
(application, passwordCredential, keyCredential, federatedIdentityCredential).
"""
from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import json
import secrets
import string
import uuid
from typing import TYPE_CHECKING, Any

from cryptography import x509

from . import validation
from .exceptions import bad_request, concurrency_violation, conflict, name_taken, not_found, too_large

if TYPE_CHECKING:
    from .backend import Caller, GraphBackend

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


class Applications:
    """/applications and what hangs off one; state, visibility and lookups are the composing backend's."""

    def __init__(self, backend: GraphBackend) -> None:
        self.backend = backend

    def _app(self, addr: Address, *, for_write: bool = False) -> dict[str, Any]:
        # Writes addressed by uniqueName see a replicating object at once; everything else waits.
        return self.backend.require(APPS, addr[0], addr[1], any_visibility=for_write and addr[0] == "uniqueName")

    def _writable(self, caller: Caller, addr: Address) -> dict[str, Any]:
        app = self._app(addr, for_write=True)
        caller.require_write(app)
        return app

    def _credential_write(self, caller: Caller, app: dict[str, Any]) -> None:
        """Credential writes on one application do not come close together: one that arrived while another was
        still in flight (arrived before that one was answered), or within `credentialWriteWindowMs` after it,
        is Directory_ConcurrencyViolation (409 or 503, `concurrencyViolationStatuses` in turn) and changes
        nothing. Called before the write; it records this one's span, saved with the app."""
        b = self.backend
        now, last = b.now(), app.get("_credentialWrite")
        arrived = caller.arrived if caller.arrived is not None else now
        window = b.settings["credentialWriteWindowMs"] / 1000.0
        if last and last[0] <= arrived < last[1] + window:
            raise concurrency_violation(b.violation_status())
        app["_credentialWrite"] = [arrived, now]

    def get(self, caller: Caller, addr: Address) -> dict[str, Any]:
        app = self._app(addr)
        caller.require_read(app)
        return self.backend.replica(caller, app)

    def list(self, caller: Caller) -> list[dict[str, Any]]:
        return [self.backend.replica(caller, a) for a in self.backend.objects(APPS) if caller.may_read(a)]

    def create(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        caller.require_create(users_may_register=self.backend.settings["usersCanRegisterApplications"])
        validation.check_application(body, creating=True)
        b = self.backend
        self._require_free_name(body.get("uniqueName"))
        b.deleted.require_quota(caller)
        app = new_application(now=b.now(), visible_at=b.visible_at(), owner=caller.oid, tenant_id=b.tenant_id)
        app["createdByAppId"] = caller.app_id
        self._apply(app, body)
        return b.save(APPS, app)

    def _require_free_name(self, name: str | None) -> None:
        """A name is taken by a live application or by one in deleted items (for its 30 days): 400
        Request_BadRequest as msgraph-bicep-types issue 137 and byte5ai/omadia issue 916 show it, or 409
        Request_MultipleObjectsWithSameKeyValue as Graph answers other alternate keys (`uniqueNameConflictStatus`)."""
        b = self.backend
        if name and (b.find(APPS, "uniqueName", name, any_visibility=True) or b.deleted.holding("uniqueName", name)):
            raise name_taken("uniqueName", b.settings["uniqueNameConflictStatus"])

    def upsert(self, caller: Caller, unique_name: str, body: dict[str, Any],
               *, create_if_missing: bool) -> tuple[dict[str, Any], bool]:
        """PATCH /applications(uniqueName='..'): (app, created). Without `Prefer: create-if-missing` a
        missing app is a 404 (Graph "Upsert application" page)."""
        app = self.backend.find(APPS, "uniqueName", unique_name, any_visibility=True)
        if app is not None:
            self.update(caller, ("uniqueName", unique_name), body)
            return app, False
        if not create_if_missing:
            raise not_found(unique_name)
        if body.get("uniqueName") not in (None, unique_name):
            raise bad_request("The uniqueName in the body does not match the key.")
        return self.create(caller, {**body, "uniqueName": unique_name}), True

    def update(self, caller: Caller, addr: Address, body: dict[str, Any]) -> dict[str, Any]:
        app = self._writable(caller, addr)
        validation.check_application(body, creating=False)
        if "uniqueName" in body and body["uniqueName"] != app["uniqueName"]:
            if app["uniqueName"]:
                raise bad_request("Property 'uniqueName' is immutable once set.")
            self._require_free_name(body["uniqueName"])  # "can be updated only if null": a compare-and-set
        self._apply(app, body, caller)
        return self.backend.save(APPS, app)

    def _apply(self, app: dict[str, Any], body: dict[str, Any], writer: Caller | None = None) -> None:
        """Checks the body against the application and the policies, then merges it in. With `writer` (an
        update), a body carrying keyCredentials is a credential write."""
        if "appRoles" in body:
            validation.check_enabled_entitlements_kept(app["appRoles"], body["appRoles"], "appRoles")
        new_scopes = (body.get("api") or {}).get("oauth2PermissionScopes")
        if new_scopes is not None:
            validation.check_enabled_entitlements_kept(app["api"]["oauth2PermissionScopes"], new_scopes,
                                                       "oauth2PermissionScopes")
        if "identifierUris" in body:
            self.backend.policies.check_identifier_uris({**app, "api": {**app["api"], **(body.get("api") or {})}},
                                                        list(body["identifierUris"] or []))
        for uri in body.get("identifierUris") or []:
            other = next((a for a in self.backend.store.values(APPS) if a["id"] != app["id"]
                          and uri.lower() in (u.lower() for u in a["identifierUris"])), None)
            if other is not None or self.backend.deleted.holding("identifierUris", uri):
                raise bad_request("Another object with the same value for property identifierUris already exists.")
        patch = dict(body)
        if "keyCredentials" in patch:
            existing = {k["keyId"]: k for k in app["keyCredentials"]}
            patch["keyCredentials"] = [new_key_credential(k, existing, visible_at=self.backend.visible_at())
                                       for k in body["keyCredentials"]]
            for key in patch["keyCredentials"]:
                if key["keyId"] not in existing:  # a key kept as it was is not written again
                    self.backend.policies.check_key(app, parse_iso(key["endDateTime"], "endDateTime")
                                                    - parse_iso(key["startDateTime"], "startDateTime"))
            if writer is not None:
                self._credential_write(writer, app)
        self._require_size(app, patch)
        merge(app, patch)

    def _require_size(self, app: dict[str, Any], patch: dict[str, Any]) -> None:
        """The object as it would be written stays under `objectSizeLimitBytes` (its JSON, keys included)."""
        after = copy.deepcopy(public(app))
        merge(after, patch)
        if len(json.dumps(after)) > self.backend.settings["objectSizeLimitBytes"]:
            raise too_large()

    def delete(self, caller: Caller, addr: Address) -> None:
        """Into deleted items for 30 days (backend_deleted.py), with its service principal."""
        app = self._writable(caller, addr)
        self.backend.deleted.soft_delete("application", app)
        sp = self.backend.sp_by_app_id(app["appId"], any_visibility=True)
        if sp is not None:  # deleting an application deletes its service principal
            self.backend.principals.remove(sp)

    # -- passwords -----------------------------------------------------------------------------------------
    def add_password(self, caller: Caller, addr: Address, body: Any) -> dict[str, Any]:
        app = self._writable(caller, addr)
        if not isinstance(body, dict) or set(body) - {"passwordCredential"}:
            raise bad_request("Invalid request body for addPassword.")
        spec = body.get("passwordCredential") or {}
        if set(spec) - {"displayName", "startDateTime", "endDateTime", "customKeyIdentifier"}:
            raise bad_request("Property does not exist as a declared property of resource 'PasswordCredential'.")
        cred, secret = new_password(spec, now=self.backend.now(), visible_at=self.backend.visible_at())
        self.backend.policies.check_password(app, parse_iso(cred["endDateTime"], "endDateTime")
                                             - parse_iso(cred["startDateTime"], "startDateTime"))
        self._require_size(app, {"passwordCredentials": [*app["passwordCredentials"], public(cred)]})
        self._credential_write(caller, app)
        app["passwordCredentials"].append(cred)
        self.backend.save(APPS, app)
        self.backend.issued.add("passwords", secret)
        return {**public(cred), "secretText": secret}

    def remove_password(self, caller: Caller, addr: Address, body: Any) -> None:
        app = self._writable(caller, addr)
        key_id = body.get("keyId") if isinstance(body, dict) else None
        if not key_id:
            raise bad_request("Property 'keyId' is required and cannot be null or empty.")
        self._credential_write(caller, app)
        kept = [p for p in app["passwordCredentials"] if p["keyId"] != key_id]
        if len(kept) == len(app["passwordCredentials"]):
            raise not_found(key_id)
        app["passwordCredentials"] = kept
        self.backend.save(APPS, app)

    # -- federated identity credentials --------------------------------------------------------------------
    def create_fic(self, caller: Caller, addr: Address, body: Any) -> dict[str, Any]:
        app = self._writable(caller, addr)
        fic = new_fic(body, visible_at=self.backend.visible_at())
        self._credential_write(caller, app)
        if any(f["name"].lower() == fic["name"].lower() for f in app["_fics"]):
            raise conflict("FederatedIdentityCredential with name " + fic["name"] + " already exists.")
        if any(f["issuer"] == fic["issuer"] and f["subject"] == fic["subject"] for f in app["_fics"]):
            raise bad_request("The combination of issuer and subject must be unique for the application. Issuer "
                              f"{fic['issuer']} and Subject: {fic['subject']} already exist. paramName: "
                              f"FederatedIdentityCredential.Subject, paramValue: {fic['subject']}, objectType: "
                              "Microsoft.Online.DirectoryServices.Application",
                              code="InvalidFederatedIdentityCredentialValue")
        app["_fics"].append(fic)
        self.backend.save(APPS, app)
        return {**public(fic), "_appObjectId": app["id"]}

    def list_fics(self, caller: Caller, addr: Address) -> list[dict[str, Any]]:
        app = self.get(caller, addr)
        return [public(f) for f in app["_fics"] if self.backend.visible(f)]

    def delete_fic(self, caller: Caller, addr: Address, key: str) -> None:
        app = self._writable(caller, addr)
        self._credential_write(caller, app)
        kept = [f for f in app["_fics"] if key not in (f["id"], f["name"]) or not self.backend.visible(f)]
        if len(kept) == len(app["_fics"]):
            raise not_found(key)
        app["_fics"] = kept
        self.backend.save(APPS, app)
