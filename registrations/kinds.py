"""The four kinds of registration, as data. Every difference between them that code acts on is a field of
`Plan`; what each kind's request carries is its model (models.py). Adding a kind touches these two files."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from .models import RegistrationType

Grant = Literal["delegated", "app-role", "azure-role"]
Flow = Literal["authorization_code", "authorization_code_pkce", "client_credentials"]


@dataclass(frozen=True)
class Plan:
    type: RegistrationType
    summary: str
    # A credential that signs in at the token endpoint (secret, certificate or federated).
    has_credential: bool
    flow: Flow | None
    target_kinds: tuple[str, ...]
    # How the client gets access to the DICOM service, per target kind.
    grants: tuple[tuple[str, Grant], ...] = ()
    # The DICOM server's own API: identifier URI, scope and app roles on the app; its service principal is
    # tagged so clients find it; the DICOM target must name it; it is not deleted while clients use it.
    exposes_api: bool = False
    # Only Registrations.Admin may create it (it decides who may call a DICOM server).
    admin_only: bool = False
    # The formats GET /registrations/{name}/config/{format} renders for it (views.FORMATS names every format);
    # any other is a 422 that lists these.
    formats: tuple[str, ...] = ("json", "env", "msal")
    # Platforms whose clients call the DICOM service from a web page: a managed service must allow their
    # redirect URIs' origins in its CORS configuration (when CORS_FOR_SPA is on).
    browser_platforms: tuple[str, ...] = ()

    def grant_for(self, target_kind: str) -> Grant | None:
        return dict(self.grants).get(target_kind)

    @property
    def signs_in_users(self) -> bool:
        """A delegated client: users sign in through it and it calls the DICOM service as them."""
        return self.flow in ("authorization_code", "authorization_code_pkce")

    @property
    def app_only(self) -> bool:
        """Tokens for the app itself (client credentials: `.default`), not for a signed-in user."""
        return self.flow == "client_credentials"


PLANS: dict[str, Plan] = {
    plan.type: plan
    for plan in (
        Plan(
            type="confidential",
            summary="web app; authorization code with a client secret; refresh tokens (90 days)",
            has_credential=True,
            flow="authorization_code",
            target_kinds=("managed", "oss"),
            grants=(("managed", "delegated"), ("oss", "delegated")),
        ),
        Plan(
            type="public",
            summary="SPA or native app; authorization code + PKCE (S256); no secret; refresh tokens (SPA 24 h)",
            has_credential=False,
            flow="authorization_code_pkce",
            target_kinds=("managed", "oss"),
            grants=(("managed", "delegated"), ("oss", "delegated")),
            browser_platforms=("spa",),
            # ohif: an OHIF viewer's configuration, for the spa platform only (views.ohif_config says so)
            formats=("json", "env", "msal", "dicomweb-client", "ohif"),
        ),
        Plan(
            type="service",
            summary="daemon; client credentials at the token endpoint",
            has_credential=True,
            flow="client_credentials",
            target_kinds=("managed", "oss"),
            grants=(("managed", "azure-role"), ("oss", "app-role")),
            formats=("json", "env", "msal", "dicomweb-client"),
        ),
        Plan(
            type="resource",
            summary="API registration an open-source DICOM server validates tokens against",
            has_credential=False,
            flow=None,
            target_kinds=("oss",),
            exposes_api=True,
            admin_only=True,
            formats=("json", "env"),  # a DICOM server validates tokens: it has no msal client to configure
        ),
    )
}

# Built-in Azure roles on an Azure Health Data Services DICOM service. There is no write-only built-in role:
# "writer" needs DICOM Data Owner, the smallest role that can store instances.
DICOM_DATA_OWNER = "58a3b984-7adf-4c20-983a-32417c86fbc8"
DICOM_DATA_READER = "e89c7a3c-2f64-4fa1-a847-3e4c9ba4283a"
KEY_VAULT_SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
MANAGED_ACCESS_ROLES = {"reader": DICOM_DATA_READER, "writer": DICOM_DATA_OWNER, "admin": DICOM_DATA_OWNER}

# The open-source DICOM server authorizes by its roles.json: each role, matched by name on the token's
# `roles` claim, grants data actions. The file it ships defines only globalReader (read) and globalAdmin (*);
# its docs show a globalWriter that a deployment must add itself. So a resource registration returns the
# whole file the server must run with, and each access level maps to a role that file grants it.
OSS_ROLES: dict[str, tuple[str, ...]] = {"globalReader": ("read",), "globalWriter": ("read", "write"),
                                         "globalAdmin": ("*",)}
OSS_ACCESS_ACTIONS = {"reader": "read", "writer": "write", "admin": "*"}
OSS_ACCESS_ROLES = {"reader": "globalReader", "writer": "globalWriter", "admin": "globalAdmin"}


def oss_role_grants(role: str, access: str) -> bool:
    """Whether `role`, as the returned roles.json defines it, allows what `access` needs."""
    actions = OSS_ROLES.get(role, ())
    return "*" in actions or OSS_ACCESS_ACTIONS[access] in actions


def oss_roles_json() -> dict:
    """The roles.json an open-source DICOM server must run with (its schema: name, dataActions,
    notDataActions, scopes) so that every access level this API grants works."""
    return {"roles": [{"name": name, "dataActions": list(actions), "notDataActions": [], "scopes": ["/"]}
                      for name, actions in OSS_ROLES.items()]}


# Platforms whose refresh tokens Entra limits: a SPA's live 24 hours ("Refresh tokens in the Microsoft
# identity platform"); every other client's 90 days.
REFRESH_TOKEN_LIFETIMES = {"spa": "P1D"}
REFRESH_TOKEN_LIFETIME = "P90D"
OSS_ROLE_DESCRIPTIONS = {
    "globalReader": "Read DICOM studies, series and instances",
    "globalWriter": "Read and store DICOM data",
    "globalAdmin": "Every DICOM operation, including delete",
}
MANAGED_DELEGATED_SCOPE = "Dicom.ReadWrite"
OSS_DELEGATED_SCOPE = "user_impersonation"

# Ids of what a resource app defines are derived from its uniqueName, so re-sending the same manifest is a
# no-op for Graph and a rebuilt registration keeps the ids its clients were granted.
_ID_NAMESPACE = uuid.UUID("6f1f9b34-5d6e-4b7a-9c0f-2f8f3f8a1d42")


def stable_id(*parts: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, "|".join(parts)))


def resource_manifest(unique_name: str, identifier_uri: str | None) -> dict:
    """The Graph application fields of an open-source DICOM server's API registration; without an identifier
    URI when the default (which names the appId) is set after the create."""
    return {
        "identifierUris": [identifier_uri] if identifier_uri else [],
        "api": {
            "requestedAccessTokenVersion": 2,
            "oauth2PermissionScopes": [
                {
                    "id": stable_id(unique_name, "scope", OSS_DELEGATED_SCOPE),
                    "value": OSS_DELEGATED_SCOPE,
                    "type": "User",
                    "isEnabled": True,
                    "adminConsentDisplayName": "Access the DICOM service",
                    "adminConsentDescription": "Read and write DICOM data as the signed-in user",
                    "userConsentDisplayName": "Access the DICOM service",
                    "userConsentDescription": "Read and write DICOM data as you",
                }
            ],
        },
        "appRoles": [
            {
                "id": stable_id(unique_name, "role", value),
                "value": value,
                "displayName": value,
                "description": description,
                "allowedMemberTypes": ["User", "Application"],
                "isEnabled": True,
            }
            for value, description in OSS_ROLE_DESCRIPTIONS.items()
        ],
    }
