"""The directory behind Microsoft Graph, and the lookups the token endpoint, the managed identity endpoint
and ARM share with it. No HTTP.

`GraphBackend` holds time, visibility, stale reads and lookups. The operations on applications
(backend_applications.py), on service principals, assignments and grants (backend_principals.py), on owners
(backend_owners.py), on deleted items with the object quotas (backend_deleted.py) and the app management policy
(policies.py) are parts: each imports this module (and objects.py, caller.py), never the other way round, as in
the keyvault and arm packages; directory.py puts them together, handing each the siblings it uses.

Replication delay (docs/local-tenant.md): a new object is invisible to reads, to writes by object id and to
the token endpoint until its `_visibleAt` on the tenant clock; writes by uniqueName see it at once.
"""
from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Iterable, Iterator

from ..runtime import Clock, DirectorySettings, Faults, Issued
from ..store import Store
from .caller import DIRECTORY_READ_ALL, Caller
from .exceptions import bad_request, not_found
from .objects import (APPS, ASSIGNMENTS, GRANTS, GROUPS, SPS, USERS, new_grant, public, render_application,
                      render_service_principal)

__all__ = ["Caller", "GraphBackend"]
# getByIds: "You can specify up to 1000 IDs" (directoryobject-getbyids, v1.0).
GET_BY_IDS_MAX = 1000


class GraphBackend:
    def __init__(self, store: Store, clock: Clock, faults: Faults, tenant_id: str,
                 issued: Issued | None = None, settings: DirectorySettings | None = None) -> None:
        self.store, self.clock, self.faults, self.tenant_id = store, clock, faults, tenant_id
        self.issued = issued or Issued()
        self.settings = settings or DirectorySettings()
        self._violations = 0

    def violation_status(self) -> int:
        """The status of the next Directory_ConcurrencyViolation: `concurrencyViolationStatuses` in turn."""
        statuses = self.settings["concurrencyViolationStatuses"]
        self._violations += 1
        return statuses[(self._violations - 1) % len(statuses)]

    # -- time and visibility -------------------------------------------------------------------------------
    def now(self) -> float:
        return self.clock.now()

    def visible_at(self) -> float:
        return self.now() + self.faults.replication_delay

    def visible(self, obj: dict[str, Any] | None) -> bool:
        return obj is not None and obj.get("_visibleAt", 0) <= self.now()

    def objects(self, table: str) -> Iterator[dict[str, Any]]:
        return (o for o in self.store.values(table) if self.visible(o))

    def save(self, table: str, obj: dict[str, Any]) -> dict[str, Any]:
        if table in (APPS, SPS):
            self._remember_previous(obj)
        return self.store.put(table, obj["id"], obj)

    # -- stale reads (docs/local-tenant.md, "Fidelity: consistency") ----------------------------------------
    def _remember_previous(self, obj: dict[str, Any]) -> None:
        """With `staleReadsMs`, each property a write changed keeps its previous value for app-only readers
        until that long after the write. A property changed again meanwhile keeps the value the lagging
        replica still shows (the oldest), and its time runs from the latest write."""
        lag = self.settings["staleReadsMs"] / 1000.0
        if lag <= 0:
            obj.pop("_seen", None)
            obj.pop("_stale", None)
            return
        now, current = self.now(), json.loads(json.dumps(public(obj)))
        seen = obj.get("_seen")
        stale = {k: v for k, v in (obj.get("_stale") or {}).items() if v[1] > now}
        if seen is not None:
            for key in set(seen) | set(current):
                if seen.get(key) != current.get(key):
                    old = stale[key][0] if key in stale else seen.get(key)
                    stale[key] = [old, now + lag]
        obj["_seen"], obj["_stale"] = current, stale

    def replica(self, caller: Caller | None, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as this caller's read sees it: an app-only caller may be served by a replica that has
        not applied the latest updates yet (the previous values `_remember_previous` kept); a delegated
        caller reads its own writes."""
        if caller is None or not caller.app_only or not obj.get("_stale"):
            return obj
        now = self.now()
        lagging = {k: v[0] for k, v in obj["_stale"].items() if v[1] > now}
        return {**obj, **lagging} if lagging else obj

    # -- lookups -------------------------------------------------------------------------------------------
    def find(self, table: str, key: str, value: str, *, any_visibility: bool = False) -> dict[str, Any] | None:
        if key == "id":
            obj = self.store.get(table, value)
        else:
            obj = next((o for o in self.store.values(table) if str(o.get(key, "")).lower() == value.lower()),
                       None)
        return obj if obj is not None and (any_visibility or self.visible(obj)) else None

    def require(self, table: str, key: str, value: str, *, any_visibility: bool = False) -> dict[str, Any]:
        obj = self.find(table, key, value, any_visibility=any_visibility)
        if obj is None:
            raise not_found(value)
        return obj

    def app_by_app_id(self, app_id: str) -> dict[str, Any] | None:
        return self.find(APPS, "appId", app_id)

    def sp_by_app_id(self, app_id: str, *, any_visibility: bool = False) -> dict[str, Any] | None:
        return self.find(SPS, "appId", app_id, any_visibility=any_visibility)

    def sp_view(self, sp: dict[str, Any], caller: Caller | None = None) -> dict[str, Any]:
        """A service principal as Graph shows it (to `caller`: see `replica`), with what it mirrors from its
        application."""
        app = self.find(APPS, "appId", sp["appId"], any_visibility=True)
        return render_service_principal(self.replica(caller, sp), app and self.replica(caller, app))

    def sp_views(self, sps: Iterable[dict[str, Any]], caller: Caller | None = None) -> list[dict[str, Any]]:
        """Many service principals as sp_view shows them, their applications looked up once for all (a
        lookup per principal would make listing a directory quadratic in its size)."""
        apps = {str(a.get("appId", "")).lower(): a for a in self.store.values(APPS)}
        out = []
        for sp in sps:
            app = apps.get(sp["appId"].lower())
            out.append(render_service_principal(self.replica(caller, sp), app and self.replica(caller, app)))
        return out

    def resolve_resource(self, identifier: str) -> tuple[dict[str, Any], str] | None:
        """The resource service principal a scope names, by appId, identifierUri or servicePrincipalName
        (first-party resources such as Graph are known by their servicePrincipalNames), and the audience
        to put in a v1 token: the identifier as registered."""
        wanted = identifier.rstrip("/").lower()
        for view in self.sp_views(self.objects(SPS)):
            if view["appId"].lower() == wanted:
                return view, view["appId"]
            for name in view["servicePrincipalNames"]:
                if name.rstrip("/").lower() == wanted:
                    return view, name
        return None

    def get_by_ids(self, caller: Caller, body: Any) -> list[dict[str, Any]]:
        """POST /directoryObjects/getByIds (v1.0 reference, "directoryObject: getByIds"): the objects among
        `ids` that exist, each with its `@odata.type`, searched in the collections `types` names (values
        not case-sensitive; default: every type). An id with no visible object is simply not in the answer.
        Least privileged permission: Directory.Read.All."""
        caller.require(DIRECTORY_READ_ALL)
        if not isinstance(body, dict) or not isinstance(body.get("ids"), list):
            raise bad_request("Required parameter 'ids' is missing or is not a collection of strings.")
        for key in body:
            if key not in ("ids", "types"):
                raise bad_request(f"Property '{key}' does not exist as a declared property or extension property.")
        ids, types = body["ids"], body.get("types")
        if len(ids) > GET_BY_IDS_MAX:
            raise bad_request(f"Too many ids: at most {GET_BY_IDS_MAX} may be given.")
        # "The IDs are GUIDs, represented as strings": anything else is refused rather than passed over.
        for value in ids:
            if not isinstance(value, str) or not _is_guid(value):
                raise bad_request(f"Invalid object identifier '{value}'.")
        if types is not None and not (isinstance(types, list) and all(isinstance(t, str) for t in types)):
            raise bad_request("Invalid value specified for parameter 'types'.")
        wanted = {t.lower() for t in types or ["directoryObject"]}
        if "directoryobject" in wanted:
            wanted = set(DIRECTORY_TYPES)
        for unknown in sorted(wanted - set(DIRECTORY_TYPES)):
            raise bad_request(f"Invalid value specified for parameter 'types': '{unknown}'.")
        found = []
        for object_id in dict.fromkeys(v.lower() for v in ids):
            for type_name in wanted:
                table, render = DIRECTORY_TYPES[type_name]
                obj = self.find(table, "id", object_id)
                if obj is not None:
                    found.append({"@odata.type": f"#microsoft.graph.{_TYPE_NAMES[type_name]}",
                                  **render(self, self.replica(caller, obj))})
        return found

    def principal(self, object_id: str) -> tuple[dict[str, Any], str] | None:
        """A principal an app role can be assigned to, with its appRoleAssignment principalType."""
        for table, principal_type in ((SPS, "ServicePrincipal"), (USERS, "User"), (GROUPS, "Group")):
            found = self.find(table, "id", object_id)
            if found is not None:
                return found, principal_type
        return None

    def may_sign_in(self, user: dict[str, Any], client_sp: dict[str, Any]) -> bool:
        """With appRoleAssignmentRequired, only users assigned to the application, directly or through a
        group they are a direct member of, may sign in to it (AADSTS50105 otherwise)."""
        if not client_sp.get("appRoleAssignmentRequired"):
            return True
        holders = {user["id"]} | {g["id"] for g in self.objects(GROUPS) if user["id"] in g.get("_members", [])}
        return any(a["resourceId"] == client_sp["id"] and a["principalId"] in holders
                   for a in self.objects(ASSIGNMENTS))

    def user(self, key: str) -> dict[str, Any] | None:
        return self.find(USERS, "id", key) or self.find(USERS, "userPrincipalName", key)

    def role_values(self, principal_id: str, resource: dict[str, Any]) -> list[str]:
        """Values of the enabled app roles assigned to a principal on a resource service principal."""
        by_id = {r["id"]: r["value"] for r in resource.get("appRoles", []) if r.get("isEnabled", True)}
        return sorted({by_id[a["appRoleId"]] for a in self.objects(ASSIGNMENTS)
                       if a["principalId"] == principal_id and a["resourceId"] == resource["id"]
                       and a["appRoleId"] in by_id})

    def consent_for_user(self, client_sp_id: str, resource_id: str, user_id: str, scopes: list[str]) -> None:
        """A user's own consent on the sign-in page: the Principal grant for that client and resource gains the
        scopes (made when there is none), at once, as the code the page then issues needs it."""
        for g in self.store.values(GRANTS):
            if (g["clientId"], g["resourceId"], g.get("principalId")) == (client_sp_id, resource_id, user_id):
                g["scope"] = " ".join(sorted(set((g.get("scope") or "").split()) | set(scopes)))
                self.save(GRANTS, g)
                return
        self.save(GRANTS, new_grant(client_sp_id, resource_id, "Principal", user_id, " ".join(sorted(scopes)),
                                    visible_at=self.now()))

    def granted_scopes(self, client_sp_id: str, resource_id: str, user_id: str | None) -> set[str]:
        """Delegated scopes consented for a client on a resource: admin consent (AllPrincipals) plus the
        user's own consent (Principal)."""
        scopes: set[str] = set()
        for g in self.objects(GRANTS):
            if g["clientId"] == client_sp_id and g["resourceId"] == resource_id and (
                    g["consentType"] == "AllPrincipals" or user_id and g.get("principalId") == user_id):
                scopes.update((g.get("scope") or "").split())
        return scopes


def _is_guid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


# The directory collections getByIds searches: type name (lower case) -> (table, rendering).
DIRECTORY_TYPES: dict[str, tuple[str, Callable[[GraphBackend, dict[str, Any]], dict[str, Any]]]] = {
    "application": (APPS, lambda b, o: render_application(o)),
    "serviceprincipal": (SPS, lambda b, o: b.sp_view(o)),
    "user": (USERS, lambda b, o: {"accountEnabled": True, **public(o)}),
    "group": (GROUPS, lambda b, o: public(o)),
}
_TYPE_NAMES = {"application": "application", "serviceprincipal": "servicePrincipal", "user": "user",
               "group": "group"}
