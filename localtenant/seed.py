"""The seeded tenant (docs/local-tenant.md, "Seed"): fixed ids so `make run` is reproducible.

First-party service principals carry their real appIds, app role and scope ids (Microsoft Graph's
Application.ReadWrite.OwnedBy is 18a4783c-..., as in the Graph permissions reference).
"""
from __future__ import annotations

import uuid
from typing import Any

from .graph.objects import (APPS, ASSIGNMENTS, GRANTS, GROUPS, SPS, USERS, merge, new_application, new_assignment,
                            new_grant, new_password, new_service_principal, password_hash)

TENANT_ID = "7d5b1f0e-3c2a-4e8b-9f61-0a2b3c4d5e6f"
SUBSCRIPTION_ID = "3f1c2d4e-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
RESOURCE_GROUP = "local-rg"
RG_ID = f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{RESOURCE_GROUP}"
VAULT_RESOURCE_ID = f"{RG_ID}/providers/Microsoft.KeyVault/vaults/local"
DICOM_RESOURCE_ID = f"{RG_ID}/providers/Microsoft.HealthcareApis/workspaces/localws/dicomservices/dicom"
PRODUCT_MI_ID = f"{RG_ID}/providers/Microsoft.Web/sites/dicom-registrations"

GRAPH_ROLES = {"Application.ReadWrite.OwnedBy": "18a4783c-866b-4cc7-a460-3d5e5662c884",
               "Application.ReadWrite.All": "1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9",
               "Application.Read.All": "9a5d68dd-52b0-4cc2-bd40-abcf44ac3a30",
               "AppRoleAssignment.ReadWrite.All": "06b708a9-e830-4db3-a914-8e69da51d44f",
               "DelegatedPermissionGrant.ReadWrite.All": "8e8e4742-1d95-4f68-9d56-6ee75648c72a",
               "Directory.Read.All": "7ab1d382-f21e-4acd-a863-ba3e13f7da61",
               "Policy.Read.All": "246dd0d5-5bd0-4def-940b-0421030a5b68"}
PRODUCT_GRAPH_ROLES = ["Application.ReadWrite.OwnedBy", "Application.Read.All",
                       "AppRoleAssignment.ReadWrite.All", "DelegatedPermissionGrant.ReadWrite.All",
                       "Directory.Read.All", "Policy.Read.All"]
FIRST_PARTY = {
    "graph": ("00000003-0000-0000-c000-000000000000", "Microsoft Graph", "https://graph.microsoft.com",
              {"User.Read": "e1fe6dd8-ba31-4d61-89e7-88639da4683d",
               "Application.Read.All": "c79f8feb-a9db-4090-85f9-90d820caa0eb",
               "Application.ReadWrite.All": "bdfbf15f-ee85-4955-8675-146e8e5296b5",
               "Directory.Read.All": "06da0dbc-49e2-44d2-8312-53f166ab848a"}),
    "keyvault": ("cfa8b339-82a2-471a-a3c9-0fc0be7a4093", "Azure Key Vault", "https://vault.azure.net",
                 {"user_impersonation": "f53da476-18e3-4152-8e01-aec403e6edc0"}),
    "arm": ("797f4846-ba00-4fd7-ba43-dac1f8f63013", "Windows Azure Service Management API",
            "https://management.azure.com/", {"user_impersonation": "41094075-9dad-400e-a0bd-54e686782033"}),
    # "Azure API for DICOM": one delegated scope, no app roles (data access is Azure RBAC on the service).
    "dicom": ("75e725bf-66ce-4cea-9b9a-5c4caae57f33", "Azure API for DICOM",
              "https://dicom.healthcareapis.azure.com",
              {"Dicom.ReadWrite": "5a6e1b59-0b8d-4a0a-9d7e-2c3f4a5b6c7d"}),
}
API_ROLES = {"Registrations.Admin": "6e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a5b",
             "Registrations.Request": "7f2a3b4c-5d6e-4f7a-9b0c-1d2e3f4a5b6c",
             "Registrations.Read": "8a3b4c5d-6e7f-4a8b-8c1d-2e3f4a5b6c7d",
             "Registrations.Broker": "0c5d6e7f-8a9b-4c0d-8e3f-4a5b6c7d8e9f"}
API_SCOPE_ID = "9b4c5d6e-7f8a-4b9c-8d2e-3f4a5b6c7d8e"
# The Azure CLI's public client (its well-known appId), with Graph's delegated application scopes consented, as
# `az ad app create` and `az ad app owner add` use them on a user's behalf.
AZURE_CLI_APP_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
AZURE_CLI_GRAPH_SCOPES = "User.Read Application.ReadWrite.All Directory.Read.All"
CLIENTS = {"admin_client": "Registrations.Admin", "requester_client": "Registrations.Request",
           "requester_client_b": "Registrations.Request", "reader_client": "Registrations.Read",
           # an approval workflow's identity, asking on a person's behalf
           "broker_client": "Registrations.Broker"}


def _id(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://local.test/seed/{name}"))


def _role(value: str, role_id: str, member_types: list[str]) -> dict[str, Any]:
    return {"id": role_id, "value": value, "displayName": value, "description": value,
            "allowedMemberTypes": member_types, "isEnabled": True, "origin": "Application"}


def _scope(value: str, scope_id: str) -> dict[str, Any]:
    return {"id": scope_id, "value": value, "type": "User", "isEnabled": True,
            "adminConsentDisplayName": value, "adminConsentDescription": value,
            "userConsentDisplayName": value, "userConsentDescription": value, "origin": "Application"}


def _app(store, now: float, name: str, display: str, **fields) -> dict[str, Any]:
    app = new_application(now=now, visible_at=0, owner=None, tenant_id=TENANT_ID)
    app.update(id=_id(f"{name}/app"), appId=_id(f"{name}/appId"), displayName=display, uniqueName=name)
    merge(app, fields)
    return store.put(APPS, app["id"], app)


def _sp_for(store, now: float, name: str, app: dict[str, Any]) -> dict[str, Any]:
    sp = new_service_principal(app, app_id=app["appId"], now=now, visible_at=0, owner=None)
    sp.update(id=_id(f"{name}/sp"), displayName=app["displayName"], appDisplayName=app["displayName"])
    return store.put(SPS, sp["id"], sp)


def _assign(store, now: float, principal: dict[str, Any], resource: dict[str, Any], role_id: str,
            principal_type: str = "ServicePrincipal") -> None:
    a = new_assignment(principal, resource, role_id, principal_type, now=now, visible_at=0,
                       unique=_id(f"assign/{principal['id']}/{resource['id']}/{role_id}"))
    store.put(ASSIGNMENTS, a["id"], a)


def _names(app_id: str, audience: str) -> list[str]:
    """A first-party resource lists its audience both with and without a trailing slash (as Azure API for
    DICOM does), so a scope naming either form finds it."""
    return [app_id, audience.rstrip("/"), audience.rstrip("/") + "/"]


USER_PASSWORD = "Local-user-passw0rd-do-not-use-in-azure"
MEMBER_PASSWORD = "Local-member-passw0rd-do-not-use-in-azure"


def _secret_for(name: str) -> str:
    return f"{name[:3]}8Q~local-{name.replace('_', '-')}-secret-do-not-use-in-azure"


def _client(store, now: float, name: str, display: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """An app with a client secret and its service principal: (app, sp, secret)."""
    app = _app(store, now, f"local-{name.replace('_', '-')}", display)
    secret = _secret_for(name)
    cred, _ = new_password({"displayName": "seed"}, now=now, visible_at=0)
    cred.update(hint=secret[:3], _hash=password_hash(cred["_salt"], secret))
    app["passwordCredentials"].append(cred)
    store.put(APPS, app["id"], app)
    return app, _sp_for(store, now, name, app), secret


def build(store, now: float, *, bare: bool = False) -> dict[str, Any]:
    """Writes the seed into the store and returns what `lt.seed` shows. A bare seed grants the product
    nothing and has no API registration: `python -m registrations.setup`, run as `seed.operator`, makes them
    (docs/local-tenant.md, "Bare start")."""
    seed: dict[str, Any] = {"tenant_id": TENANT_ID, "subscription_id": SUBSCRIPTION_ID,
                            "resource_group": RESOURCE_GROUP, "resource_group_id": RG_ID,
                            "vault_resource_id": VAULT_RESOURCE_ID, "dicom_resource_id": DICOM_RESOURCE_ID,
                            "first_party": {}}
    first: dict[str, dict[str, Any]] = {}
    for key, (app_id, display, audience, scopes) in FIRST_PARTY.items():
        roles = [_role(v, GRAPH_ROLES[v], ["Application"]) for v in GRAPH_ROLES] if key == "graph" else []
        sp = new_service_principal(None, app_id=app_id, now=now, visible_at=0, owner=None, extra={
            "id": _id(f"firstparty/{key}"), "displayName": display, "appDisplayName": display,
            "servicePrincipalNames": _names(app_id, audience), "signInAudience": "AzureADMultipleOrgs",
            "publisherName": "Microsoft Services", "appOwnerOrganizationId":
            "f8cdef31-a31e-4b4a-93e4-5f571e91255a", "appRoles": roles,
            "oauth2PermissionScopes": [_scope(v, i) for v, i in scopes.items()]})
        first[key] = store.put(SPS, sp["id"], sp)
        seed["first_party"][key] = {"app_id": app_id, "object_id": sp["id"], "audience": audience}

    product = new_service_principal(None, app_id=_id("product/appId"), now=now, visible_at=0, owner=None,
                                    extra={"id": _id("product/sp"), "displayName": "dicom-registrations",
                                           "servicePrincipalType": "ManagedIdentity",
                                           "alternativeNames": ["isExplicit=False", PRODUCT_MI_ID]})
    store.put(SPS, product["id"], product)
    seed["product"] = {"app_id": product["appId"], "object_id": product["id"], "resource_id": PRODUCT_MI_ID}
    user = {"id": _id("user"), "userPrincipalName": "dicom.user@local.test", "displayName": "DICOM User",
            "mail": "dicom.user@local.test", "_visibleAt": 0}
    # The password the sign-in page asks for (local only, like the seeded client secrets); kept as a salted hash.
    password = USER_PASSWORD
    salt = _id("user/salt")
    user.update(_salt=salt, _hash=password_hash(salt, password))
    store.put(USERS, user["id"], user)
    seed["user"] = {"object_id": user["id"], "upn": user["userPrincipalName"], "password": password}
    # A security group with the user as its one member: what a delegated client's sign-in can be limited to.
    group = {"id": _id("group"), "displayName": "DICOM viewers", "mailEnabled": False, "securityEnabled": True,
             "mailNickname": "dicom-viewers", "_members": [user["id"]], "_visibleAt": 0}
    store.put(GROUPS, group["id"], group)
    seed["group"] = {"object_id": group["id"], "display_name": group["displayName"], "members": [user["id"]]}
    # A member user with no directory role and nothing assigned: what Entra lets anyone in the tenant do by
    # default (register applications, own them, add owners to them) through the Azure CLI.
    member = {"id": _id("member"), "userPrincipalName": "member.user@local.test", "displayName": "Member User",
              "mail": "member.user@local.test", "_visibleAt": 0}
    member.update(_salt=_id("member/salt"), _hash=password_hash(_id("member/salt"), MEMBER_PASSWORD))
    store.put(USERS, member["id"], member)
    seed["member"] = {"object_id": member["id"], "upn": member["userPrincipalName"], "password": MEMBER_PASSWORD}
    cli = _app(store, now, "local-azure-cli", "Microsoft Azure CLI", isFallbackPublicClient=True,
               publicClient={"redirectUris": ["http://localhost"]})
    cli["appId"] = AZURE_CLI_APP_ID
    store.put(APPS, cli["id"], cli)
    cli_sp = _sp_for(store, now, "local-azure-cli", cli)
    cli_grant = new_grant(cli_sp["id"], first["graph"]["id"], "AllPrincipals", None, AZURE_CLI_GRAPH_SCOPES,
                          visible_at=0)
    store.put(GRANTS, cli_grant["id"], cli_grant)
    seed["azure_cli"] = {"app_id": AZURE_CLI_APP_ID, "object_id": cli_sp["id"], "redirect_uri": "http://localhost",
                         "graph_scopes": AZURE_CLI_GRAPH_SCOPES.split()}
    if bare:
        # The administrator who runs setup: a pipeline's service principal holding Graph's
        # Application.ReadWrite.All and AppRoleAssignment.ReadWrite.All (Owner on the resource group is
        # given by core.py, with the other ARM seeds).
        app, sp, secret = _client(store, now, "operator", "Local operator")
        for role in ("Application.ReadWrite.All", "AppRoleAssignment.ReadWrite.All"):
            _assign(store, now, sp, first["graph"], GRAPH_ROLES[role])
        seed["operator"] = {"app_id": app["appId"], "object_id": sp["id"], "app_object_id": app["id"],
                            "secret": secret}
        for name in CLIENTS:  # callers with no role yet: setup gives them one
            app, sp, secret = _client(store, now, name, f"Local {name.replace('_', ' ')}")
            seed[name] = {"app_id": app["appId"], "object_id": sp["id"], "app_object_id": app["id"],
                          "secret": secret, "role": None}
        # The front end people will ask through (a native client, no consent yet: setup --front-end
        # pre-authorizes it on the API it makes).
        portal = _app(store, now, "local-portal", "Local portal", isFallbackPublicClient=True,
                      publicClient={"redirectUris": ["http://localhost"]})
        portal_sp = _sp_for(store, now, "local-portal", portal)
        seed["portal_client"] = {"app_id": portal["appId"], "object_id": portal_sp["id"],
                                 "redirect_uri": "http://localhost", "user_role": None}
        return seed
    for role in PRODUCT_GRAPH_ROLES:
        _assign(store, now, product, first["graph"], GRAPH_ROLES[role])

    api_app = _app(store, now, "dicom-registrations-api", "DICOM Registrations API",
                   identifierUris=["api://dicom-registrations"],
                   appRoles=[_role(v, i, ["User", "Application"]) for v, i in API_ROLES.items()],
                   api={"requestedAccessTokenVersion": 2,
                        "oauth2PermissionScopes": [_scope("user_impersonation", API_SCOPE_ID)]})
    api_sp = _sp_for(store, now, "dicom-registrations-api", api_app)
    seed["api"] = {"app_id": api_app["appId"], "object_id": api_sp["id"], "app_object_id": api_app["id"],
                   "identifier_uri": "api://dicom-registrations", "roles": dict(API_ROLES)}

    for name, role in CLIENTS.items():
        app, sp, secret = _client(store, now, name, f"Local {name.replace('_', ' ')}")
        _assign(store, now, sp, api_sp, API_ROLES[role])
        seed[name] = {"app_id": app["appId"], "object_id": sp["id"], "app_object_id": app["id"],
                      "secret": secret, "role": role}

    # A person calling the API through a portal: a native client with consent for the API's delegated
    # scope, and the user holding Registrations.Request on the API.
    portal = _app(store, now, "local-portal", "Local portal", isFallbackPublicClient=True,
                  publicClient={"redirectUris": ["http://localhost"]})
    portal_sp = _sp_for(store, now, "local-portal", portal)
    grant = new_grant(portal_sp["id"], api_sp["id"], "AllPrincipals", None, "user_impersonation", visible_at=0)
    store.put(GRANTS, grant["id"], grant)
    _assign(store, now, {**user, "displayName": user["displayName"]}, api_sp, API_ROLES["Registrations.Request"],
            principal_type="User")
    seed["portal_client"] = {"app_id": portal["appId"], "object_id": portal_sp["id"],
                             "redirect_uri": "http://localhost", "user_role": "Registrations.Request"}
    return seed
