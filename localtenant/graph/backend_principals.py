"""Service principals and what is granted to them: app role assignments, delegated permission grants and
the objects they own. No HTTP. Shapes in objects.py.
"""
from __future__ import annotations

from typing import Any

from . import validation
from .backend import GraphBackend
from .backend_deleted import DeletedItems
from .caller import Caller
from .exceptions import (bad_request, conflict, links_exceeded, no_backing_application, not_a_valid_reference,
                         not_found)
from .objects import (APPS, ASSIGNMENTS, GRANTS, SPS, USERS, Address, NO_ROLE, new_assignment, new_grant,
                      new_service_principal, public, render_application)

ASSIGN = "AppRoleAssignment.ReadWrite.All"
GRANT = "DelegatedPermissionGrant.ReadWrite.All"


class Principals:
    """/servicePrincipals, /oauth2PermissionGrants and what hangs off a service principal; state, visibility
    and lookups are the composing backend's."""

    def __init__(self, backend: GraphBackend, *, deleted: DeletedItems) -> None:
        self.backend, self.deleted = backend, deleted

    # -- service principals --------------------------------------------------------------------------------
    def create(self, caller: Caller, body: Any) -> dict[str, Any]:
        caller.require_create(users_may_register=self.backend.settings["usersCanRegisterApplications"])
        body = validation.check_body(body, {"appId", "tags", "notes", "description", "appRoleAssignmentRequired",
                                            "accountEnabled"}, {"appId"}, "ServicePrincipal")
        b = self.backend
        app = b.app_by_app_id(body["appId"])
        if app is None:
            # Graph's answer while a new application is still replicating (docs/local-tenant.md, "Fidelity").
            raise no_backing_application(body["appId"])
        caller.require_write(app)
        if b.sp_by_app_id(body["appId"], any_visibility=True):
            raise conflict("The service principal cannot be created, updated, or restored because the service "
                           f"principal name {body['appId']} is already in use.")
        extra = {k: body[k] for k in ("tags", "notes", "description", "appRoleAssignmentRequired",
                                      "accountEnabled") if k in body}
        self.deleted.require_quota(caller)
        sp = new_service_principal(app, app_id=app["appId"], now=b.now(), visible_at=b.visible_at(),
                                   owner=caller.oid, extra=extra)
        return b.sp_view(b.save(SPS, sp))

    def _sp(self, addr: Address) -> dict[str, Any]:
        return self.backend.require(SPS, addr[0], addr[1])

    def get(self, caller: Caller, addr: Address) -> dict[str, Any]:
        sp = self._sp(addr)
        if caller.oid != sp["id"]:
            caller.require_read(sp)
        return self.backend.sp_view(sp, caller)

    def list(self, caller: Caller) -> list[dict[str, Any]]:
        return self.backend.sp_views((sp for sp in self.backend.objects(SPS)
                                      if caller.may_read(sp) or caller.oid == sp["id"]), caller)

    def delete(self, caller: Caller, addr: Address) -> None:
        sp = self._sp(addr)
        caller.require_write(sp)
        self.remove(sp)

    def remove(self, sp: dict[str, Any]) -> None:
        """A service principal goes to deleted items; its app role assignments (either side) and grants (either
        side) go for good (a restore does not bring them back: no source says it would)."""
        store = self.backend.store
        self.deleted.soft_delete("servicePrincipal", sp)
        for a in store.values(ASSIGNMENTS):
            if sp["id"] in (a["principalId"], a["resourceId"]):
                store.delete(ASSIGNMENTS, a["id"])
        for g in store.values(GRANTS):
            if sp["id"] in (g["clientId"], g["resourceId"]):
                store.delete(GRANTS, g["id"])

    def owned_objects(self, caller: Caller, sp_id: str) -> list[dict[str, Any]]:
        owner = self._sp(("id", sp_id))
        if caller.oid != owner["id"]:
            caller.require_read_all()
        b = self.backend
        out = [{"@odata.type": "#microsoft.graph.application", **render_application(b.replica(caller, a))}
               for a in b.objects(APPS) if sp_id in a["_owners"]]
        out += [{"@odata.type": "#microsoft.graph.servicePrincipal", **view}
                for view in b.sp_views((s for s in b.objects(SPS) if sp_id in s["_owners"]), caller)]
        return out

    # -- app role assignments ------------------------------------------------------------------------------
    def create_assignment(self, caller: Caller, resource_id: str, body: Any) -> dict[str, Any]:
        caller.require(ASSIGN)
        body = validation.check_body(body, {"principalId", "resourceId", "appRoleId"},
                                     {"principalId", "resourceId"}, "AppRoleAssignment")
        b = self.backend
        resource = b.sp_view(b.require(SPS, "id", resource_id))
        if body["resourceId"] != resource_id:
            raise bad_request("Resource id in the request body does not match the service principal.")
        found = b.principal(body["principalId"])
        if found is None:
            # Graph answers 400, not 404, for a principal it has not seen (yet): docs "Fidelity".
            raise not_a_valid_reference()
        principal, principal_type = found
        role_id = body.get("appRoleId") or NO_ROLE
        if role_id != NO_ROLE and role_id not in {r["id"] for r in resource["appRoles"]}:
            raise bad_request("Permission being assigned was not found on application")
        if any(a["principalId"] == principal["id"] and a["resourceId"] == resource_id and a["appRoleId"] == role_id
               for a in b.store.values(ASSIGNMENTS)):
            raise bad_request("Permission being assigned already exists on the object")
        limit = b.settings["appRoleAssignmentsPerPrincipal"]  # Entra service limits: 1,500 per principal
        if sum(1 for a in b.store.values(ASSIGNMENTS) if a["principalId"] == principal["id"]) >= limit:
            raise links_exceeded("the app role assignments of this principal", limit)
        if principal_type == "ServicePrincipal":
            principal = b.sp_view(principal)  # its displayName comes from its application
        a = new_assignment(principal, resource, role_id, principal_type, now=b.now(),
                           visible_at=b.visible_at())
        return public(b.save(ASSIGNMENTS, a))

    def list_assigned_to(self, caller: Caller, resource_id: str) -> list[dict[str, Any]]:
        caller.require_read_all(ASSIGN)
        self.backend.require(SPS, "id", resource_id)
        return [public(a) for a in self.backend.objects(ASSIGNMENTS) if a["resourceId"] == resource_id]

    def list_assignments_of(self, caller: Caller, principal_id: str) -> list[dict[str, Any]]:
        if caller.oid != principal_id:
            caller.require_read_all(ASSIGN)
        self.backend.require(SPS, "id", principal_id)
        return [public(a) for a in self.backend.objects(ASSIGNMENTS) if a["principalId"] == principal_id]

    def delete_assignment(self, caller: Caller, resource_id: str, assignment_id: str) -> None:
        caller.require(ASSIGN)
        a = self.backend.require(ASSIGNMENTS, "id", assignment_id)
        if a["resourceId"] != resource_id:
            raise not_found(assignment_id)
        self.backend.store.delete(ASSIGNMENTS, assignment_id)

    # -- delegated permission grants -----------------------------------------------------------------------
    def create_grant(self, caller: Caller, body: Any) -> dict[str, Any]:
        caller.require(GRANT)
        body = validation.check_body(body, {"clientId", "consentType", "principalId", "resourceId", "scope",
                                            "startTime", "expiryTime"}, {"clientId", "consentType", "resourceId"},
                                     "OAuth2PermissionGrant")
        if body["consentType"] not in ("AllPrincipals", "Principal"):
            raise bad_request("Invalid value specified for property 'consentType'.")
        if (body["consentType"] == "Principal") != bool(body.get("principalId")):
            raise bad_request("principalId must be set exactly when consentType is Principal.")
        b = self.backend
        for key in ("clientId", "resourceId"):
            b.require(SPS, "id", body[key])
        if body.get("principalId") and b.find(USERS, "id", body["principalId"]) is None:
            raise not_found(body["principalId"])
        if any(g["clientId"] == body["clientId"] and g["resourceId"] == body["resourceId"]
               and g["consentType"] == body["consentType"] and g.get("principalId") == body.get("principalId")
               for g in b.store.values(GRANTS)):
            raise conflict("Permission entry already exists.")
        g = new_grant(body["clientId"], body["resourceId"], body["consentType"], body.get("principalId"),
                      body.get("scope") or "", visible_at=b.visible_at())
        return public(b.save(GRANTS, g))

    def list_grants(self, caller: Caller) -> list[dict[str, Any]]:
        caller.require_read_all(GRANT)
        return [public(g) for g in self.backend.objects(GRANTS)]

    def get_grant(self, caller: Caller, grant_id: str) -> dict[str, Any]:
        caller.require_read_all(GRANT)
        return public(self.backend.require(GRANTS, "id", grant_id))

    def update_grant(self, caller: Caller, grant_id: str, body: Any) -> None:
        caller.require(GRANT)
        body = validation.check_body(body, {"scope"}, set(), "OAuth2PermissionGrant")
        g = self.backend.require(GRANTS, "id", grant_id)
        g["scope"] = body.get("scope") or ""
        self.backend.save(GRANTS, g)

    def delete_grant(self, caller: Caller, grant_id: str) -> None:
        caller.require(GRANT)
        self.backend.require(GRANTS, "id", grant_id)
        self.backend.store.delete(GRANTS, grant_id)
