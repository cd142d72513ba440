"""`python -m registrations.setup`: prepare a tenant for the function app, once, as an administrator.

It reads the function app's settings (the environment, or `--settings` with a local.settings.json or a flat
JSON object), signs in with DefaultAzureCredential (an administrator's `az login`, or a pipeline's service
principal) and makes what the app needs, looking first and changing only what is missing:

1. the API's own app registration, by uniqueName (`--api-name`): identifier URI `api://{tenant}/{api-name}`
   (`api://{tenant}/{appId}` where the tenant's app management policy allows only the default forms),
   the app roles Registrations.Admin, .Request, .Read and .Broker, the delegated scope `user_impersonation`, v2
   tokens; and its service principal, which only principals holding one of its roles may get tokens for;
2. the Graph application permissions the settings need, on the function app's managed identity
   (`--principal-id`): Application.ReadWrite.OwnedBy, Application.Read.All, Directory.Read.All and
   Policy.Read.All (the tenant's credential policy) always;
   AppRoleAssignment.ReadWrite.All only when an open-source DICOM target is configured (its service clients
   get app roles) or with `--sign-in-groups` (requests may then name signInGroups); DelegatedPermissionGrant.ReadWrite.All only with GRANT_ADMIN_CONSENT;
   Application.ReadWrite.All only with MANAGE_OWNERS (adding owners needs it). A permission the
   identity holds beyond these is reported, never removed;
3. Azure roles for the identity: Key Vault Secrets Officer on the vault; Role Based Access Control
   Administrator on the vault and on each managed DICOM service, each with a condition that lets it assign
   and remove only Key Vault Secrets User (vault) or DICOM Data Owner and Reader (DICOM service), in the
   form Microsoft documents ("Examples to delegate Azure role assignment management with conditions",
   "Constrain roles");
4. `Registrations.Request` for each `--requester` (a person or a pipeline asking in its own name),
   `Registrations.Broker` for each `--broker` (the sample Logic App's identity, asking on a person's behalf)
   and `Registrations.Admin` for each `--admin`.

Then it prints the app settings to set (API_CLIENT_ID, API_AUDIENCE). Run twice, the second run changes
nothing; `--what-if` prints the plan and changes nothing. REST through the same adapters the app uses.

`--import` instead writes registrations made before the registry (tags only) to the registry, those the
identity alone owns, and lists the others for an administrator to adopt (migration.py). Whoever runs it (the
app's identity, or an administrator) needs Storage Table Data Contributor on the app's storage account.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import saga
from .adapters.errors import UpstreamError, lag_404, lag_new_application, lag_new_principal
from .adapters.graph import GraphClient
from .adapters.rbac import RbacClient
from .kinds import DICOM_DATA_OWNER, DICOM_DATA_READER, KEY_VAULT_SECRETS_USER
from .manifest import ADMIN, BROKER, READ, REQUEST, default_identifier_uri
from .problems import Misconfigured
from .quota import IDENTIFIER_URI_RULES
from .settings import ARM_SCOPE, GRAPH_SCOPE, ManagedTarget, OssTarget, Settings, load

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"  # Microsoft Graph's appId, the same in every tenant
KEY_VAULT_SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
STORAGE_TABLE_DATA_CONTRIBUTOR = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3"  # the registry's table
RBAC_ADMINISTRATOR = "f58310d9-a9f6-439a-9e8d-f62e7b41a168"
OWNED_BY, READ_ALL, DIRECTORY = "Application.ReadWrite.OwnedBy", "Application.Read.All", "Directory.Read.All"
POLICY = "Policy.Read.All"
ASSIGN_ROLES, GRANT_CONSENT = "AppRoleAssignment.ReadWrite.All", "DelegatedPermissionGrant.ReadWrite.All"
READ_WRITE_ALL = "Application.ReadWrite.All"
SETUP_SECONDS = 300.0
API_ROLES = {
    ADMIN: "Create, read, rotate and delete every DICOM registration.",
    REQUEST: "Create DICOM registrations and manage the ones it requested.",
    READ: "Read every DICOM registration and its client configuration.",
    BROKER: "Ask for DICOM registrations on a person's behalf (an approval workflow): they become that person's.",
}
_NS = uuid.UUID("5c0f1e7a-2b6d-4c1e-9f3a-7d8e6b5a4c3f")


def graph_permissions(settings: Settings, *, sign_in_groups: bool = False) -> list[str]:
    """The Graph application permissions these settings need, and no more: AppRoleAssignment.ReadWrite.All
    for open-source targets' app roles, or when requests may name signInGroups (without it the API refuses
    them up front with a 422 naming it)."""
    needed = [OWNED_BY, READ_ALL, DIRECTORY, POLICY]
    if sign_in_groups or any(isinstance(t, OssTarget) for t in settings.dicom_services.values()):
        needed.append(ASSIGN_ROLES)
    if settings.grant_admin_consent:
        needed.append(GRANT_CONSENT)
    if settings.manage_owners:
        needed.append(READ_WRITE_ALL)
    return needed


def constrain_roles(role_ids: list[str]) -> str:
    """An ABAC condition (version 2.0) letting a Role Based Access Control Administrator add and remove
    assignments of these roles only: Microsoft's "Constrain roles" example."""
    guids = ", ".join(role_ids)
    return ("((!(ActionMatches{'Microsoft.Authorization/roleAssignments/write'})) OR "
            f"(@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{guids}}}))"
            " AND "
            "((!(ActionMatches{'Microsoft.Authorization/roleAssignments/delete'})) OR "
            f"(@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {{{guids}}}))")


@dataclass(frozen=True)
class AzureRole:
    scope: str
    role_id: str
    name: str
    condition: str | None = None


def azure_roles(settings: Settings, storage_account_id: str | None = None) -> list[AzureRole]:
    """The Azure role assignments the identity needs (infra/main.bicep makes the vault's two, and the
    storage account's for the registry)."""
    if not settings.key_vault_resource_id:
        raise Misconfigured("KEY_VAULT_RESOURCE_ID is required by setup: the vault's ARM id, where the identity "
                            "gets Key Vault Secrets Officer")
    vault = settings.key_vault_resource_id
    wanted = [AzureRole(vault, KEY_VAULT_SECRETS_OFFICER, "Key Vault Secrets Officer"),
              AzureRole(vault, RBAC_ADMINISTRATOR, "Role Based Access Control Administrator",
                        constrain_roles([KEY_VAULT_SECRETS_USER]))]
    for target in settings.dicom_services.values():
        if isinstance(target, ManagedTarget):
            wanted.append(AzureRole(target.resourceId, RBAC_ADMINISTRATOR, "Role Based Access Control Administrator",
                                    constrain_roles([DICOM_DATA_OWNER, DICOM_DATA_READER])))
    if storage_account_id:
        wanted.append(AzureRole(storage_account_id, STORAGE_TABLE_DATA_CONTRIBUTOR, "Storage Table Data Contributor"))
    return list(dict.fromkeys(wanted))


def _normal(condition: str | None) -> str:
    return " ".join((condition or "").replace("(", " ( ").replace(")", " ) ").split()).lower()


@dataclass
class Setup:
    settings: Settings
    graph: GraphClient
    rbac: RbacClient
    principal_id: str
    api_name: str = "dicom-registrations-api"
    requesters: list[str] = field(default_factory=list)
    admins: list[str] = field(default_factory=list)
    brokers: list[str] = field(default_factory=list)
    sign_in_groups: bool = False
    front_ends: list[str] = field(default_factory=list)
    what_if: bool = False
    storage_account_id: str | None = None
    out: TextIO = sys.stdout
    changes: list[str] = field(default_factory=list)

    # -- the plan, step by step -----------------------------------------------------------------------------
    def run(self) -> dict[str, str]:
        """Make (or with what_if, describe) every change; returns the app settings to set."""
        with saga.budget(SETUP_SECONDS):
            app = self.api_registration()
            api_sp = self.api_service_principal(app)
            self.graph_permissions()
            self.api_roles(api_sp)
            self.azure_roles()
        self.say("no changes needed" if not self.changes else
                 f"{len(self.changes)} change(s) {'planned (what-if: nothing was changed)' if self.what_if else 'made'}")
        return {"API_CLIENT_ID": app["appId"] if app else "<appId of the new registration>",
                "API_AUDIENCE": (self._audience_of(app) if app else None) or self.identifier_uri}

    @property
    def identifier_uri(self) -> str:
        # A secure form under Entra's identifier URI restrictions: api://{tenantId}/{string}.
        return f"api://{self.settings.tenant_id}/{self.api_name}"

    def _audience_of(self, app: dict) -> str | None:
        """The API's identifier URI on its registration: the name's form, or the appId's where the tenant's app
        management policy allows no other (nonDefaultUriAddition)."""
        uris = app.get("identifierUris") or []
        return next((uri for uri in (self.identifier_uri, default_identifier_uri(self.settings.tenant_id,
                                                                                  app["appId"])) if uri in uris), None)

    def change(self, what: str, action: Callable[[], Any]) -> Any:
        self.changes.append(what)
        self.say(("would " if self.what_if else "") + what)
        return None if self.what_if else action()

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def api_registration(self) -> dict | None:
        app = self.graph.get_application(self.api_name)
        if app is None:
            manifest = {"displayName": "DICOM Registrations API", "signInAudience": "AzureADMyOrg",
                        **self._api_manifest({})}
            created = self.change(f"create the app registration {self.api_name} ({self.identifier_uri})",
                                  lambda: self._create_api({**manifest, "uniqueName": self.api_name}))
            return created
        patch = self._api_manifest(app)
        if patch:
            self.change(f"update the app registration {self.api_name}: {', '.join(sorted(patch))}",
                        lambda: self.graph.update_application(app["id"], patch))
        return app

    def _create_api(self, manifest: dict) -> dict:
        """Create the API's registration with the name's identifier URI; where the tenant's app management
        policy refuses any but the default forms, with api://{tenantId}/{appId} instead (set once the appId
        exists), saying so: API_AUDIENCE is then that."""
        try:
            return self.graph.create_application(manifest)
        except UpstreamError as exc:
            rule = next((d for d in exc.details if d in IDENTIFIER_URI_RULES), None) if exc.status == 400 else None
            if rule is None:
                raise
        made = self.graph.create_application({**manifest, "identifierUris": []})
        uri = default_identifier_uri(self.settings.tenant_id, made["appId"])
        saga.eventually(lambda: self.graph.update_application(made["id"], {"identifierUris": [uri]}),
                        lagging=lag_404)
        self.say(f"the tenant's app management policy refuses {self.identifier_uri} ({rule}: "
                 f"{IDENTIFIER_URI_RULES[rule]}): the API's identifier URI is {uri}")
        return dict(made, identifierUris=[uri])

    def _api_manifest(self, app: dict) -> dict:
        """What the API registration lacks: our identifier URI, the three roles (enabled, for users and
        applications), the delegated scope, v2 tokens. Nothing is removed; ids are kept."""
        patch: dict[str, Any] = {}
        uris = list(app.get("identifierUris") or [])
        if not (app and self._audience_of(app)) and self.identifier_uri not in uris:
            patch["identifierUris"] = [*uris, self.identifier_uri]
        roles = [dict(r) for r in app.get("appRoles") or []]
        by_value = {r.get("value"): r for r in roles}
        changed = False
        for value, description in API_ROLES.items():
            role = by_value.get(value)
            if role is None:
                roles.append({"id": self._id(value), "value": value, "displayName": value,
                              "description": description, "allowedMemberTypes": ["User", "Application"],
                              "isEnabled": True})
                changed = True
            elif not role.get("isEnabled", True) or set(role.get("allowedMemberTypes") or []) != {"User", "Application"}:
                role.update(isEnabled=True, allowedMemberTypes=["User", "Application"])
                changed = True
        if changed:
            patch["appRoles"] = roles
        api = dict(app.get("api") or {})
        scopes = [dict(s) for s in api.get("oauth2PermissionScopes") or []]
        api_changed = False
        if not any(s.get("value") == "user_impersonation" for s in scopes):
            text = "Call the DICOM registrations API as the signed-in user (app roles still decide what they may do)."
            scopes.append({"id": self._id("user_impersonation"), "value": "user_impersonation", "type": "User",
                           "isEnabled": True, "adminConsentDisplayName": "Use the DICOM registrations API",
                           "adminConsentDescription": text, "userConsentDisplayName": "Use the DICOM registrations API",
                           "userConsentDescription": text})
            api_changed = True
        if api.get("requestedAccessTokenVersion") != 2:
            api_changed = True
        # Front ends people ask through (a portal, a Power App) sign them in for user_impersonation without a
        # consent prompt: api.preAuthorizedApplications.
        scope_id = next(s["id"] for s in scopes if s.get("value") == "user_impersonation")
        pre = [dict(p) for p in api.get("preAuthorizedApplications") or []]
        for front_end in self.front_ends:
            entry = next((p for p in pre if p.get("appId") == front_end), None)
            if entry is None:
                pre.append({"appId": front_end, "delegatedPermissionIds": [scope_id]})
                api_changed = True
            elif scope_id not in (entry.get("delegatedPermissionIds") or []):
                entry["delegatedPermissionIds"] = [*(entry.get("delegatedPermissionIds") or []), scope_id]
                api_changed = True
        if api_changed:
            patch["api"] = {**api, "requestedAccessTokenVersion": 2, "oauth2PermissionScopes": scopes,
                            **({"preAuthorizedApplications": pre} if pre else {})}
        return patch

    def _id(self, value: str) -> str:
        """A stable id for one of our roles or scopes in this tenant, so a what-if shows what a run makes."""
        return str(uuid.uuid5(_NS, f"{self.settings.tenant_id}/{self.api_name}/{value}"))

    def api_service_principal(self, app: dict | None) -> dict | None:
        sp = self.graph.get_service_principal(app["appId"]) if app else None
        if sp is not None:
            return sp
        app_id = app["appId"] if app else None

        def create() -> dict:
            assert app_id
            return saga.create_once(
                lambda: self.graph.create_service_principal(app_id, [], assignment_required=True),
                lambda: self.graph.get_service_principal(app_id), lagging=lag_new_application)

        return self.change(f"create the service principal of {self.api_name} (app role assignment required)",
                           create)

    def graph_permissions(self) -> None:
        graph_sp = self.graph.get_service_principal(GRAPH_APP_ID)
        if graph_sp is None:
            raise Misconfigured("Microsoft Graph's service principal was not found in this tenant")
        role_ids = {r["value"]: r["id"] for r in graph_sp.get("appRoles") or []}
        held = {a["appRoleId"] for a in self.graph.list_app_role_assignments(self.principal_id)
                if a.get("resourceId") == graph_sp["id"]}
        needed = graph_permissions(self.settings, sign_in_groups=self.sign_in_groups)
        for permission in needed:
            if role_ids[permission] not in held:
                self._assign_app_role(graph_sp["id"], self.principal_id, role_ids[permission],
                                      f"grant the identity {self.principal_id} the Graph permission {permission}")
        extra = sorted(v for v, i in role_ids.items() if i in held and v not in needed)
        if extra:
            self.say(f"note: the identity also holds {', '.join(extra)}, which these settings do not need; "
                     "remove it unless something else uses this identity")

    def api_roles(self, api_sp: dict | None) -> None:
        wanted = ([(p, REQUEST) for p in self.requesters] + [(p, ADMIN) for p in self.admins]
                  + [(p, BROKER) for p in self.brokers])
        if not wanted:
            return
        role_ids = {r["value"]: r["id"] for r in (api_sp or {}).get("appRoles") or []}
        held = {(a["principalId"], a["appRoleId"]) for a in self._assigned_to(api_sp["id"])} if api_sp else set()
        for principal, role in wanted:
            role_id = role_ids.get(role, self._id(role))
            if (principal, role_id) not in held:
                self._assign_app_role(api_sp["id"] if api_sp else "", principal, role_id,
                                      f"give {principal} the app role {role}")

    def _assigned_to(self, resource_sp_id: str) -> list[dict]:
        """The assignments of a resource's app roles. The API's service principal may be one this run just
        made, which Graph does not show to every reader at once (404 for a few seconds): waited out."""
        return saga.eventually(lambda: self.graph.list_app_role_assigned_to(resource_sp_id), lagging=lag_404)

    def _assign_app_role(self, resource_sp_id: str, principal: str, role_id: str, what: str) -> None:
        def find() -> dict | None:
            return next((a for a in self._assigned_to(resource_sp_id)
                         if a["principalId"] == principal and a["appRoleId"] == role_id), None)

        def assign() -> dict:
            try:
                return saga.create_once(lambda: self.graph.assign_app_role(resource_sp_id, principal, role_id),
                                        find, lagging=lag_new_principal)
            except UpstreamError as exc:
                if exc.status == 400 and (found := find()) is not None:
                    return found  # Graph answers a duplicate assignment with 400
                raise

        self.change(what, assign)

    def azure_roles(self) -> None:
        for role in azure_roles(self.settings, self.storage_account_id):
            present = [a["properties"] for a in self.rbac.list_for_principal(role.scope, self.principal_id)
                       if a["properties"]["roleDefinitionId"].lower().endswith(role.role_id)
                       and _covers(a["properties"].get("scope", ""), role.scope)]
            if any(_normal(p.get("condition")) == _normal(role.condition) for p in present):
                continue
            if any(not p.get("condition") for p in present) and role.condition:
                self.say(f"note: the identity holds {role.name} on {role.scope} without a condition; a "
                         "narrower assignment is added, remove the broad one")
            if any(p.get("condition") and p["scope"].lower() == role.scope.lower() for p in present):
                raise Misconfigured(f"the identity holds {role.name} on {role.scope} with another condition; "
                                    "remove that assignment and run setup again")
            limited = " (limited by a condition)" if role.condition else ""
            self.change(f"assign {role.name}{limited} to the identity on {role.scope}",
                        lambda role=role: saga.eventually(
                            lambda: self.rbac.assign(role.scope, role.role_id, self.principal_id,
                                                     condition=role.condition), lagging=lag_new_principal))


def _covers(assignment_scope: str, scope: str) -> bool:
    s, t = assignment_scope.rstrip("/").lower(), scope.rstrip("/").lower()
    return t == s or t.startswith(s + "/")


# ---------------------------------------------------------------------------------------- command line
def _read_settings(path: Path | None) -> dict[str, str]:
    """The environment, overlaid with a local.settings.json (its Values), a flat JSON object, or the list
    `az functionapp config appsettings list` prints."""
    env = dict(os.environ)
    if path is None:
        return env
    data = json.loads(path.read_text())
    values = data.get("Values", data) if isinstance(data, dict) else {i["name"]: i["value"] for i in data}
    return {**env, **{k: str(v) for k, v in values.items()}}


def build(settings: Settings) -> tuple[GraphClient, RbacClient]:
    from .adapters._rest import RestClient
    from .wiring import default_credential

    credential = default_credential(settings)
    verify = settings.connection_verify
    return (GraphClient(RestClient("graph", settings.graph_endpoint, credential, GRAPH_SCOPE, verify=verify)),
            RbacClient(RestClient("arm", settings.arm_endpoint, credential, ARM_SCOPE, verify=verify)))


def main(argv: list[str] | None = None, *, out: TextIO = sys.stdout) -> int:
    parser = argparse.ArgumentParser(prog="python -m registrations.setup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--principal-id", required=True,
                        help="object id of the function app's managed identity (infra output FUNCTION_PRINCIPAL_ID)")
    parser.add_argument("--settings", type=Path, help="the app settings: local.settings.json or a JSON object")
    parser.add_argument("--api-name", default="dicom-registrations-api",
                        help="uniqueName of the API's own app registration (default dicom-registrations-api)")
    parser.add_argument("--requester", action="append", default=[], metavar="OBJECT_ID",
                        help="a principal to give Registrations.Request (asks in its own name)")
    parser.add_argument("--broker", action="append", default=[], metavar="OBJECT_ID",
                        help="a principal to give Registrations.Broker (the sample Logic App's identity)")
    parser.add_argument("--admin", action="append", default=[], metavar="OBJECT_ID",
                        help="a principal to give Registrations.Admin")
    parser.add_argument("--front-end", action="append", default=[], metavar="APP_ID",
                        help="a client app (by appId) people ask through: pre-authorized for user_impersonation, "
                             "so they sign in without a consent prompt")
    parser.add_argument("--sign-in-groups", action="store_true",
                        help="also grant AppRoleAssignment.ReadWrite.All (tenant-wide) so that requests may name "
                             "signInGroups; without it (and without an open-source target) the API refuses them")
    parser.add_argument("--what-if", action="store_true", help="print the plan, change nothing")
    parser.add_argument("--storage-account-id", metavar="ARM_ID",
                        help="the function app's storage account (infra output STORAGE_ACCOUNT_ID): the identity "
                             "gets Storage Table Data Contributor there, for the registry's table")
    parser.add_argument("--import", dest="import_", action="store_true",
                        help="only import registrations made before the registry (tags only) that the identity "
                             "alone owns; list the others for adoption")
    args = parser.parse_args(argv)
    for value in [args.principal_id, *args.requester, *args.admin, *args.broker, *args.front_end]:
        try:
            uuid.UUID(value)
        except ValueError:
            parser.error(f"{value!r} is not an object id (a GUID)")
    try:
        settings = load(_read_settings(args.settings))
        graph, rbac = build(settings)
        if args.import_:
            return _import(settings, graph, args.principal_id, what_if=args.what_if, out=out)
        setup = Setup(settings, graph, rbac, args.principal_id, api_name=args.api_name, requesters=args.requester,
                      admins=args.admin, brokers=args.broker, sign_in_groups=args.sign_in_groups,
                      front_ends=args.front_end, what_if=args.what_if,
                      storage_account_id=args.storage_account_id, out=out)
        app_settings = setup.run()
    except Misconfigured as problem:
        print(f"error: {problem.detail}", file=sys.stderr)
        return 2
    except UpstreamError as exc:
        print(f"error: {exc.service} {exc.operation} answered {exc.status} {exc.code}: {exc}", file=sys.stderr)
        return 1
    print("\napp settings to set on the function app:", file=out)
    for name, value in app_settings.items():
        print(f"{name}={value}", file=out)
    return 0


def _import(settings: Settings, graph: GraphClient, principal_id: str, *, what_if: bool, out: TextIO) -> int:
    from datetime import datetime, timezone

    from .migration import import_registrations
    from .registry import Registry
    from .wiring import default_credential, registry_store

    registry = Registry(registry_store(settings, default_credential(settings)), lambda: datetime.now(timezone.utc))
    with saga.budget(SETUP_SECONDS):
        report = import_registrations(graph, registry, principal_id, settings.name_prefix, what_if=what_if,
                                      say=lambda line: print(line, file=out, flush=True))
    print(f"{len(report.imported)} imported{' (what-if: nothing written)' if what_if else ''}, "
          f"{len(report.recorded)} recorded already, {len(report.to_adopt)} left to adopt", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
