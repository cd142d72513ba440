"""Removing a registration: everything a create made, in an order that never leaves anything unreachable.

Used by DELETE, by a create that adopts an abandoned attempt and fails again (its undo), and by the sweep's
repair of creates that never finished. Every removal treats "already gone" as done, so a teardown that was
interrupted can simply run again. Applications and service principals go for good (delete, then purge from
deleted items), so their names and their places in the identity's object quota come back at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Executor
from datetime import datetime

from . import manifest as mf
from .adapters.graph import GraphClient
from .adapters.rbac import RbacClient, assignment_name
from .adapters.vault import VaultClient
from .adapters.errors import UpstreamError, lag_404
from .cors import Cors, origins_of
from .saga import eventually, map_concurrently
from .credentials import Credentials
from .kinds import MANAGED_ACCESS_ROLES, PLANS
from .settings import ManagedTarget, Settings
from .times import parse_time

Removed = list[dict]
# How long after a create Entra and ARM may still leave what it made out of their lists. Microsoft gives no
# bound; seconds are usual, and the local tenant's make run delays 3 s. A list still short after this is taken
# as it is (what is missing was removed by someone else).
REPLICATION_SECONDS = 20.0


def dependents(app: dict, registrations: list[dict]) -> list[dict]:
    """The registrations whose API permissions name this (resource) application: its clients."""
    return [other for other in registrations
            if any(access.get("resourceAppId") == app["appId"] for access in other.get("requiredResourceAccess") or [])]


class Teardown:
    def __init__(self, settings: Settings, *, graph: GraphClient, rbac: RbacClient, vault: VaultClient,
                 credentials: Credentials, executor: Executor, clock: Callable[[], datetime],
                 cors: Cors | None = None) -> None:
        self.settings = settings
        self._clock = clock
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
        # A principal made moments ago is not yet in every list (Graph answers 404, ARM leaves out its new role
        # assignment): such lists are waited for, but only while replication can explain it.
        wait = self._replication_window(app)
        if sp_id:
            if isinstance(target, ManagedTarget) and plan and plan.grant_for(target.kind) == "azure-role":
                # A finished create made the role its access names (an unfinished one may not have).
                role = MANAGED_ACCESS_ROLES.get(tags.get("access", "")) if tags.get("state") == "ready" else None
                made = assignment_name(target.resourceId, role, sp_id) if role else None
                jobs.append(lambda: self._remove_role_assignments(target.resourceId, sp_id, made, wait))
            jobs.append(lambda: self._remove_app_role_assignments(sp_id, wait))
            if self.settings.grant_admin_consent:  # listing grants needs the permission that made them
                jobs.append(lambda: self._remove_grants(sp_id, wait))
        spa = (app.get("spa") or {}).get("redirectUris") or []
        if self.cors is not None and self.cors.applies(plan, "spa" if spa else None, target):
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

    def _remove_role_assignments(self, scope: str, sp_id: str, made: str | None, wait: float) -> Removed:
        """The principal's role assignments on the DICOM service, including `made` (the one the create made)
        once ARM lists it: left unlisted, it would outlive the principal. One removed behind the API's back is
        never listed; after `wait` the list is taken as it is."""
        found: list[dict] = []

        def listed() -> list[dict]:
            found[:] = self._rbac.list_for_principal(scope, sp_id)
            if made and not any(a.get("name") == made for a in found):
                raise UpstreamError("arm", "listRoleAssignments", 404, "RoleAssignmentNotFound",
                                    "the role assignment this registration made is not listed yet")
            return found

        removed = []
        for assignment in self._listed(listed, wait, otherwise=found):
            if self._rbac.delete(assignment["id"]):
                removed.append({"kind": "roleAssignment", "id": assignment["id"]})
        return removed

    def _replication_window(self, app: dict) -> float:
        """Seconds left in which replication may still hide what the create of `app` made."""
        created = parse_time(app.get("createdDateTime"))
        age = 0.0 if created is None else (self._clock() - created).total_seconds()
        return max(0.0, REPLICATION_SECONDS - age)

    @staticmethod
    def _listed(list_call: Callable[[], list[dict]], wait: float, otherwise: list[dict] | None = None) -> list[dict]:
        """A list about a principal, repeated while it answers 404 for at most `wait` seconds (and within the
        budget); then `otherwise`: a principal that is gone took its holdings with it."""
        until = time.monotonic() + wait
        try:
            return eventually(list_call, lagging=lambda exc: lag_404(exc) and time.monotonic() < until)
        except UpstreamError as exc:
            if exc.status != 404:
                raise
            return otherwise or []

    def _remove_app_role_assignments(self, sp_id: str, wait: float) -> Removed:
        removed = []
        for assignment in self._listed(lambda: self._graph.list_app_role_assignments(sp_id), wait):
            self._graph.delete_app_role_assignment(assignment["resourceId"], assignment["id"])
            removed.append({"kind": "appRoleAssignment", "id": assignment["id"]})
        return removed

    def _remove_grants(self, sp_id: str, wait: float) -> Removed:
        removed = []
        for grant in self._listed(lambda: self._graph.list_grants(sp_id), wait):
            self._graph.delete_grant(grant["id"])
            removed.append({"kind": "oauth2PermissionGrant", "id": grant["id"]})
        return removed
