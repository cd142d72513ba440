"""Between a registration request and a Graph application object, both ways.

Entra ID is the only store: everything the API needs to answer later (type, target, access, requester,
provisioning state) lives on the application object as tags, so a GET never needs a second database.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .kinds import PLANS, resource_manifest
from .models import FederatedCredential, Request

TAG_MARK = "dicom-registration"
PASSWORD_NAME = "dicom-registrations"  # displayName of the passwords this API adds
CERT_NAME = "CN=dicom-registrations"  # displayName (subject) of the certificates it adds
NOTES_HEADER = "Managed by the DICOM registrations API. Requested by "

# The application object's field that holds each platform's redirect URIs.
PLATFORM_FIELD = {"web": "web", "spa": "spa", "mobile": "publicClient"}
# Credential kinds whose value this API stores in Key Vault, and the app field that lists each kind.
STORED_KINDS = ("secret", "certificate")
CREDENTIAL_FIELD = {"secret": "passwordCredentials", "certificate": "keyCredentials"}


# The app roles of the API's own registration: everything; create, and manage what one requested; read.
ADMIN, REQUEST, READ = "Registrations.Admin", "Registrations.Request", "Registrations.Read"
# A broker (an approval workflow's identity) asks on a person's behalf, naming them in REQUESTED_FOR; it
# may do nothing in its own name.
BROKER = "Registrations.Broker"
REQUESTED_FOR = "Requested-For"


@dataclass(frozen=True)
class Caller:
    """Who is calling: the token's oid, a display name and the app roles it holds. When a broker asks on a
    person's behalf, the caller is that person (a requester) and `broker` names the broker's oid."""

    object_id: str
    name: str
    roles: frozenset[str] = frozenset()
    app_id: str | None = None
    broker: str | None = None


@dataclass(frozen=True)
class Resource:
    """The DICOM resource a client is granted access to, and the one scope or app role it gets."""

    app_id: str
    sp_id: str
    scope: tuple[str, str] | None = None  # a delegated scope: (value, id)
    role: tuple[str, str] | None = None  # an app role: (value, id)


def unique_name(prefix: str, name: str) -> str:
    return f"{prefix}-{name}"


def registration_name(prefix: str, app: dict) -> str:
    """The name a caller used: the application's uniqueName without this API's prefix."""
    unique = app.get("uniqueName") or ""
    return unique[len(prefix) + 1:] if unique.startswith(prefix + "-") else unique


def secret_name(prefix: str, name: str, kind: str = "secret") -> str:
    """``{prefix}--{name}--secret`` (or ``--certificate``): maps to the configuration key
    ``{prefix}:{name}:secret`` in .NET and Functions Key Vault references."""
    return f"{prefix}--{name}--{kind}"


def credential_fingerprint(request: Request) -> str | None:
    """What identifies a federated credential (issuer, subject, audience) is too long for a tag; its hash
    is enough to tell a replay from a different request."""
    credential = request.credential
    if not isinstance(credential, FederatedCredential):
        return None
    raw = "|".join((credential.issuer, credential.subject, credential.audience))
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


# What the API last applied to the application's own free-text fields, recorded compactly so that an edit in
# the portal shows as drift: one tag of 8-hex-digit fingerprints (docs/local-tenant.md, "Drift").
APPLIED_FIELDS = {"d": "displayName", "r": "redirectUris", "n": "notes"}


def fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]


def applied_tag(display_name: str, redirect_uris: Sequence[str], notes: str | None) -> str:
    values = {"d": display_name, "r": list(redirect_uris), "n": notes}
    return "dicom-applied:" + ",".join(f"{key}={fingerprint(values[key])}" for key in APPLIED_FIELDS)


def applied(app: dict) -> dict[str, str]:
    """field -> fingerprint of what the API last applied (empty for registrations made before it recorded)."""
    recorded = dict(part.split("=", 1) for part in tag_values(app).get("applied", "").split(",") if "=" in part)
    return {field: recorded[key] for key, field in APPLIED_FIELDS.items() if key in recorded}


def entity_tag(app: dict) -> str:
    """A strong entity tag (RFC 9110) of what a registration says: its stored fields and tags, never a lease
    (a change in progress is not a different registration) nor credentials (rotation has its own handle)."""
    tags = sorted(t for t in app.get("tags") or [] if not t.startswith("dicom-lease:"))
    state = {"appId": app.get("appId"), "fields": stored_fields(app), "tags": tags}
    return '"' + hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:20] + '"'


def applied_fields(request: Request) -> str:
    """The application's own fields as a request sets them (the registry keeps them as the desired state)."""
    return applied_fields_of({"displayName": request.displayName, "notes": request.notes,
                              "redirectUris": request.redirectUris})


def applied_fields_of(fields: dict[str, Any]) -> str:
    return json.dumps({"displayName": fields["displayName"], "notes": fields["notes"],
                       "redirectUris": list(fields["redirectUris"])}, sort_keys=True)


def tags_for(request: Request, caller: Caller, *, state: str, sp_id: str | None = None) -> list[str]:
    tags = [TAG_MARK, f"dicom-type:{request.type}", f"dicom-target:{request.dicomService}",
            f"dicom-requester:{caller.object_id}", f"dicom-state:{state}"]
    if request.access:
        tags.append(f"dicom-access:{request.access}")
    if request.platform:
        tags.append(f"dicom-platform:{request.platform}")
    credential = request.credential
    if credential is not None:
        tags.append(f"dicom-credential:{credential.kind}")
        if credential.lifetimeDays:
            tags.append(f"dicom-lifetime:{credential.lifetimeDays}")
        if fingerprint := credential_fingerprint(request):
            tags.append(f"dicom-credhash:{fingerprint}")
    if request.autoRotate:
        tags.append("dicom-autorotate:true")
    tags.extend(f"dicom-reader:{reader}" for reader in request.secretReaders)
    tags.extend(f"dicom-owner:{owner}" for owner in request.owners)
    tags.extend(f"dicom-signin:{group}" for group in request.signInGroups)
    if sp_id:
        tags.append(f"dicom-sp:{sp_id}")
    tags.append(applied_tag(request.displayName, request.redirectUris, request.notes))
    return tags


def labels(tags: list[str]) -> list[str]:
    """What the application carries for people in the portal: the recorded desired state without its state
    (the registry says whether a registration is ready; a label written once at create would go stale)."""
    return [tag for tag in tags if not tag.startswith("dicom-state:")]


def create_mark(attempt: str) -> str:
    """The label that names the create that made an application: its attempt nonce, recorded in the registry
    before the POST, so a lost 201 is recognised as this create's (nobody else can know it before then)."""
    return f"dicom-create:{attempt}"


def tag_values(app: dict) -> dict[str, str]:
    values: dict[str, str] = {}
    for tag in app.get("tags") or []:
        key, sep, value = tag.partition(":")
        if sep and key.startswith("dicom-"):
            values[key[len("dicom-"):]] = value
    return values


def tag_list(app: dict, key: str) -> list[str]:
    """Values of a tag that may repeat (``dicom-reader:{id}``)."""
    prefix = f"dicom-{key}:"
    return [tag[len(prefix):] for tag in app.get("tags") or [] if tag.startswith(prefix)]


def notes_for(request: Request, caller: Caller) -> str:
    text = f"{NOTES_HEADER}{caller.name} ({caller.object_id})."
    return f"{text}\n\n{request.notes}" if request.notes else text


def user_notes(app: dict) -> str | None:
    notes = app.get("notes") or ""
    _, sep, rest = notes.partition("\n\n")
    return rest if sep else None


def identifier_uri_for(request: Request, tenant_id: str) -> str | None:
    """The App ID URI a registration that exposes an API asks for; None for the default, which names the
    appId and is set once the application exists (`default_identifier_uri`); else None."""
    if not PLANS[request.type].exposes_api:
        return None
    return request.identifierUri


def default_identifier_uri(tenant_id: str, app_id: str) -> str:
    """api://{tenantId}/{appId}: a form both identifier URI restrictions of an app management policy allow
    (nonDefaultUriAddition: only api://{appId} or api://{tenantId}/{appId}; uriAdditionWithoutUniqueTenantIdentifier:
    the tenant id or appId in it), learn.microsoft.com "Restrictions on identifier URIs of Microsoft Entra
    applications"."""
    return f"api://{tenant_id}/{app_id}"


def _default_forms(tenant_id: str, app: dict, name: str) -> set[str]:
    """The default URI, and the api://{tenantId}/{name} registrations made before it had."""
    return {default_identifier_uri(tenant_id, str(app.get("appId"))), f"api://{tenant_id}/{name}"}


def build_manifest(request: Request, caller: Caller, *, tenant_id: str, unique: str,
                   resource: Resource | None) -> dict:
    """The application object this request asks for (the body of the create-only POST /applications)."""
    manifest: dict[str, Any] = {
        "uniqueName": unique,
        "displayName": request.displayName,
        "signInAudience": "AzureADMyOrg",
        "tags": labels(tags_for(request, caller, state="provisioning")),
        "notes": notes_for(request, caller),
    }
    platform = request.platform
    if platform == "web":
        manifest["web"] = {
            "redirectUris": request.redirectUris,
            # Authorization code flow only: no tokens straight from /authorize.
            "implicitGrantSettings": {"enableAccessTokenIssuance": False, "enableIdTokenIssuance": False},
        }
    elif platform == "spa":
        manifest["spa"] = {"redirectUris": request.redirectUris}
    elif platform == "mobile":
        manifest["publicClient"] = {"redirectUris": request.redirectUris}
        manifest["isFallbackPublicClient"] = True
    if PLANS[request.type].exposes_api:
        manifest.update(resource_manifest(unique, identifier_uri_for(request, tenant_id)))
    if resource is not None:
        manifest["requiredResourceAccess"] = [required_access(resource)]
    return manifest


def required_access(resource: Resource) -> dict:
    """The API permission the client declares: an app role (service clients of the open-source server) or
    the delegated scope. Managed service clients get an Azure role instead and declare nothing."""
    if resource.role:
        grant = {"id": resource.role[1], "type": "Role"}
    else:
        assert resource.scope, "a Resource carries an app role or a delegated scope"
        grant = {"id": resource.scope[1], "type": "Scope"}
    return {"resourceAppId": resource.app_id, "resourceAccess": [grant]}


def requested_fields(request: Request, tenant_id: str) -> dict[str, Any]:
    """The fields a replay must match, in the request's own vocabulary."""
    credential = request.credential
    return {
        "type": request.type,
        "displayName": request.displayName,
        "dicomService": request.dicomService,
        "access": request.access,
        "platform": request.platform,
        "redirectUris": list(request.redirectUris),
        "identifierUri": identifier_uri_for(request, tenant_id),
        "credential.kind": credential.kind if credential else None,
        "credential.lifetimeDays": credential.lifetimeDays if credential else None,
        "credential.federation": credential_fingerprint(request),
        "autoRotate": request.autoRotate,
        "secretReaders": sorted(request.secretReaders),
        "owners": sorted(request.owners),
        "signInGroups": sorted(request.signInGroups),
        "notes": request.notes,
    }


def stored_fields(app: dict) -> dict[str, Any]:
    """The same fields as requested_fields, read back from an application object."""
    tags = tag_values(app)
    plan = PLANS.get(tags.get("type", ""))
    platform = tags.get("platform")
    redirect_uris = ((app.get(PLATFORM_FIELD[platform]) or {}).get("redirectUris") or []) if platform else []
    lifetime = tags.get("lifetime")
    return {
        "type": tags.get("type"),
        "displayName": app.get("displayName"),
        "dicomService": tags.get("target"),
        "access": tags.get("access"),
        "platform": platform,
        "redirectUris": list(redirect_uris),
        # Only an API registration's URI is this API's: an administrator may give any app one in the portal.
        "identifierUri": (app.get("identifierUris") or [None])[0] if plan and plan.exposes_api else None,
        "credential.kind": tags.get("credential"),
        "credential.lifetimeDays": int(lifetime) if lifetime else None,
        "credential.federation": tags.get("credhash"),
        "autoRotate": tags.get("autorotate") == "true",
        "secretReaders": sorted(tag_list(app, "reader")),
        "owners": sorted(tag_list(app, "owner")),
        "signInGroups": sorted(tag_list(app, "signin")),
        "notes": user_notes(app),
    }


def differing_fields(request: Request, app: dict, tenant_id: str) -> list[str]:
    wanted, stored = requested_fields(request, tenant_id), stored_fields(app)
    if wanted["identifierUri"] is None and stored["identifierUri"] in _default_forms(tenant_id, app, request.name):
        wanted["identifierUri"] = stored["identifierUri"]  # the default asked for is the default it has
    return [name for name in wanted if wanted[name] != stored[name]]


def our_passwords(app: dict) -> list[dict]:
    """Passwords this API added (at create: ``dicom-registrations``; rotations add a suffix)."""
    return [p for p in app.get("passwordCredentials") or []
            if (p.get("displayName") or "").split(" ")[0] == PASSWORD_NAME]


def our_certificates(app: dict) -> list[dict]:
    return [k for k in app.get("keyCredentials") or [] if (k.get("displayName") or "").startswith(CERT_NAME)]


def our_credentials(app: dict, kind: str) -> list[dict]:
    """The passwords or the certificates this API added, by credential kind."""
    return our_passwords(app) if kind == "secret" else our_certificates(app)
