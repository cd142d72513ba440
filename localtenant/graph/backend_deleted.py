"""Deleted items and the directory object quota. No HTTP.

Entra keeps a deleted application or service principal in deleted items for 30 days ("application: delete",
"directory resource type"): it can be read, restored or permanently deleted there, and meanwhile it keeps its
uniqueName and identifierUris taken (msgraph-bicep-types issue 137). After 30 days of the tenant's clock it is
purged on its own.

A principal without a directory role may create at most `directoryObjectQuota` directory objects (Entra's
service limits: 250). What counts: the live and the deleted objects it created, and for 30 days after each is
purged (by hand or after its 30 days) a quarter of one. The tenant knows no directory roles, so the limit holds
for every principal unless a test lifts it (`lt.set_settings({"directoryObjectQuota": None})`).
"""
from __future__ import annotations

from typing import Any

from .backend import GraphBackend
from .caller import Caller
from .exceptions import GraphError, bad_request, not_found
from .objects import APPS, GROUPS, SPS, USERS, iso, render_application

DELETED, PURGED = "deletedItems", "purgedObjects"
RETENTION = 30 * 24 * 3600  # deleted items are kept 30 days; a purged object counts a quarter for 30 more
KINDS = {"application": APPS, "servicePrincipal": SPS}
PURGED_WEIGHT = 0.25


def quota_exceeded(whose: str = "Principal") -> GraphError:
    # The refusal as public reports show it (Azure/azure-sdk-tools PR 5169: "for the Principal"; for the tenant,
    # Azure-Samples/active-directory-dotnet-graphapi-console issue 45 and the AADSTS90093 text); the code from
    # Microsoft's "Deletion and recovery of applications FAQ".
    advice = (" Please ask your administrator to increase the quota limit or delete objects to reduce the used "
              "quota." if whose == "Tenant" else "")
    return GraphError(400, "Directory_QuotaExceeded",
                      f"The directory object quota limit for the {whose} has been exceeded.{advice}")


class DeletedItems:
    """/directory/deletedItems and the quota; state, visibility and lookups are the composing backend's."""

    def __init__(self, backend: GraphBackend) -> None:
        self.backend = backend

    # -- moving objects in and out -------------------------------------------------------------------------
    def soft_delete(self, kind: str, obj: dict[str, Any]) -> None:
        b = self.backend
        b.store.delete(KINDS[kind], obj["id"])
        obj.update(deletedDateTime=iso(b.now()), _kind=kind, _deletedAt=b.now(), _visibleAt=b.visible_at())
        b.store.put(DELETED, obj["id"], obj)

    def _items(self) -> list[dict[str, Any]]:
        """Deleted items still kept; those past their 30 days are purged first."""
        b, now = self.backend, self.backend.now()
        kept = []
        for item in b.store.values(DELETED):
            if now - item["_deletedAt"] >= RETENTION:
                self._purge(item, at=item["_deletedAt"] + RETENTION)
            else:
                kept.append(item)
        return kept

    def _purge(self, item: dict[str, Any], *, at: float) -> None:
        b = self.backend
        b.store.delete(DELETED, item["id"])
        if item.get("_createdBy"):
            b.store.put(PURGED, item["id"], {"id": item["id"], "_createdBy": item["_createdBy"], "_purgedAt": at})

    def holding(self, prop: str, value: str) -> dict[str, Any] | None:
        """The deleted application that keeps `value` of uniqueName or identifierUris taken."""
        wanted = value.lower()
        for item in self._items():
            if item["_kind"] != "application":
                continue
            held = [item.get(prop) or ""] if prop == "uniqueName" else item.get(prop) or []
            if wanted in (str(v).lower() for v in held):
                return item
        return None

    # -- the routes ----------------------------------------------------------------------------------------
    def list(self, caller: Caller, kind: str) -> list[dict[str, Any]]:
        # List deletedItems: Application.Read.All for applications and service principals (OwnedBy is not
        # enough: the permission table of "List deletedItems" does not name it).
        caller.require_read_all()
        return [self.render(i) for i in self._items() if i["_kind"] == kind and self.backend.visible(i)]

    def _item(self, object_id: str) -> dict[str, Any]:
        item = next((i for i in self._items() if i["id"] == object_id), None)
        if item is None or not self.backend.visible(item):
            raise not_found(object_id)
        return item

    def get(self, caller: Caller, object_id: str) -> dict[str, Any]:
        item = self._item(object_id)
        caller.require_read(item)
        return {"@odata.type": f"#microsoft.graph.{item['_kind']}", **self.render(item)}

    def purge(self, caller: Caller, object_id: str) -> None:
        """Permanently delete: Application.ReadWrite.OwnedBy may, for what it owns ("Permanently delete an
        item")."""
        item = self._item(object_id)
        caller.require_write(item)
        self._purge(item, at=self.backend.now())

    def restore(self, caller: Caller, object_id: str) -> dict[str, Any]:
        """Restore an application or service principal as it was; restoring an application does not restore
        its service principal ("Restore deleted item")."""
        item = self._item(object_id)
        caller.require_write(item)
        b = self.backend
        if item["_kind"] == "servicePrincipal" and b.sp_by_app_id(item["appId"], any_visibility=True):
            raise bad_request("The service principal cannot be created, updated, or restored because the service "
                              f"principal name {item['appId']} is already in use.")
        b.store.delete(DELETED, object_id)
        kind = item.pop("_kind")
        for key in ("_deletedAt", "_visibleAt"):
            item.pop(key, None)
        item["deletedDateTime"] = None
        b.store.put(KINDS[kind], object_id, item)
        rendered = render_application(item) if kind == "application" else b.sp_view(item)
        return {"@odata.type": f"#microsoft.graph.{kind}", **rendered}

    def render(self, item: dict[str, Any]) -> dict[str, Any]:
        if item["_kind"] == "application":
            return render_application(item)
        return self.backend.sp_view(item)

    # -- the quota -----------------------------------------------------------------------------------------
    def usage(self, principal_id: str) -> float:
        """Objects this principal created that count against its quota (see the module's docstring)."""
        b, now = self.backend, self.backend.now()
        live = sum(1 for table in KINDS.values() for o in b.store.values(table) if o.get("_createdBy") == principal_id)
        deleted = sum(1 for i in self._items() if i.get("_createdBy") == principal_id)
        purged = 0
        for p in b.store.values(PURGED):
            if now - p["_purgedAt"] >= RETENTION:
                b.store.delete(PURGED, p["id"])
            elif p["_createdBy"] == principal_id:
                purged += 1
        return live + deleted + PURGED_WEIGHT * purged

    def require_quota(self, caller: Caller) -> None:
        """Before a create: one more object must fit in the tenant's quota (`tenantObjectQuota`: every live
        directory object and every deleted item counts; Entra service limits: 50,000 without a verified
        domain) and in the caller's."""
        b = self.backend
        tenant = b.settings["tenantObjectQuota"]
        if tenant is not None and sum(1 for t in (*KINDS.values(), USERS, GROUPS, DELETED)
                                      for _ in b.store.values(t)) + 1 > tenant:
            raise quota_exceeded("Tenant")
        limit = b.settings.object_quota
        if limit is not None and self.usage(caller.oid) + 1 > limit:
            raise quota_exceeded()
