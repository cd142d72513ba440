"""Removing a registration: everything a create made, in an order that never leaves anything unreachable.

Used by DELETE, by a create that adopts an abandoned attempt and fails again (its undo), and by the sweep's
repair of creates that never finished. Every removal treats "already gone" as done, so a teardown that was
interrupted can simply run again. Applications and service principals go for good (delete, then purge from
deleted items), so their names and their places in the identity's object quota come back at once.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor

from . import manifest as mf
from .adapters.graph import GraphClient
from .adapters.rbac import RbacClient
from .adapters.vault import VaultClient
from .adapters.errors import lag_404
from .cors import Cors, origins_of
from .saga import eventually, map_concurrently
from .credentials import Credentials
from .kinds import PLANS
from .settings import ManagedTarget, Settings

Removed = list[dict]


def dependents(app: dict, registrations: list[dict]) -> list[dict]:
    """The registrations whose API permissions name this (resource) application: its clients."""
    return [other for other in registrations
            if any(access.get("resourceAppId") == app["appId"] for access in other.get("requiredResourceAccess") or [])]


class Teardown:
    def __init__(self, settings: Settings, *, graph: GraphClient, rbac: RbacClient, vault: VaultClient,
                 credentials: Credentials, executor: Executor, cors: Cors | None = None) -> None:
        self.settings = settings
        self._graph, self._rbac, self._vault = graph, rbac, vault
        self.cors = cors
        self._credentials = credentials
        self._executor = executor

    def remove(self, name: str, app: dict) -> Removed:
        """Grants, role assignments and the secret first (concurrently), then the service principal, then
        the application: the application is the intent record, so it goes last."""
        tags = mf.tag_values(app)
        sp_id = tags.get("sp") or (self._graph.get_service_principal(app["appId"]) or {}).get("id")
        target = self.settings.target(tags.get("target", ""))
        removed: Removed = []
        jobs: list[Callable[[], Removed]] = []
        plan = PLANS.get(tags.get("type", ""))
        if sp_id:
            if isinstance(target, ManagedTarget) and plan and plan.grant_for(target.kind) == "azure-role":
                jobs.append(lambda: self._remove_role_assignments(target.resourceId, sp_id))
            jobs.append(lambda: self._remove_app_role_assignments(sp_id))
            if self.settings.grant_admin_consent:  # listing grants needs the permission that made them
                jobs.append(lambda: self._remove_grants(sp_id))
        spa = (app.get("spa") or {}).get("redirectUris") or []
        if self.cors is not None and self.cors.applies(tags.get("type", ""), "spa" if spa else None, target):
            assert isinstance(target, ManagedTarget)
            jobs.append(lambda: [{"kind": "corsOrigin", "id": origin} for origin in
                                 self.cors.withdraw(target.resourceId, origins_of(spa), leaving=app["appId"])])
        kind = tags.get("credential")
        if kind in mf.STORED_KINDS:
            secret = mf.secret_name(self.settings.name_prefix, name, kind)
            jobs.append(lambda: self._remove_secret(secret))
        for found in map_concurrently(self._executor, lambda job: job(), jobs):
            removed.extend(found)
        if sp_id and self.delete_for_good("servicePrincipal", sp_id):
            removed.append({"kind": "servicePrincipal", "id": sp_id})
        if self.delete_for_good("application", app["id"]):
            removed.append({"kind": "application", "id": app["appId"]})
        return removed

    def delete_for_good(self, kind: str, object_id: str) -> bool:
        """Delete an application or service principal, then permanently delete it from deleted items, where
        Entra would keep it 30 days with its uniqueName taken and counting against this identity's object
        quota. True when it was there (live or deleted)."""
        delete = self._graph.delete_application if kind == "application" else self._graph.delete_service_principal
        if not delete(object_id):
            # Gone already: purged, or in deleted items because an earlier teardown stopped in between.
            return self._graph.purge_deleted(object_id)
        # Just deleted: until its deleted item has replicated, the purge does not find it.
        eventually(lambda: self._graph.purge_deleted(object_id, missing_ok=False), lagging=lag_404)
        return True

    def _remove_secret(self, secret: str) -> Removed:
        removed = self._credentials.revoke_readers(secret)
        if self._vault.delete_secret(secret):
            removed.append({"kind": "keyVaultSecret", "id": secret, "note": "soft-deleted, recoverable"})
        return removed

    def _remove_role_assignments(self, scope: str, sp_id: str) -> Removed:
        removed = []
        for assignment in self._rbac.list_for_principal(scope, sp_id):
            if self._rbac.delete(assignment["id"]):
                removed.append({"kind": "roleAssignment", "id": assignment["id"]})
        return removed

    def _remove_app_role_assignments(self, sp_id: str) -> Removed:
        removed = []
        for assignment in self._graph.list_app_role_assignments(sp_id):
            self._graph.delete_app_role_assignment(assignment["resourceId"], assignment["id"])
            removed.append({"kind": "appRoleAssignment", "id": assignment["id"]})
        return removed

    def _remove_grants(self, sp_id: str) -> Removed:
        removed = []
        for grant in self._graph.list_grants(sp_id):
            self._graph.delete_grant(grant["id"])
            removed.append({"kind": "oauth2PermissionGrant", "id": grant["id"]})
        return removed
