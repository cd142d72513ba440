"""Service principals, app role assignments, delegated permission grants and owned objects. No HTTP."""
from __future__ import annotations

from typing import Any

from . import models
from .applications import ApplicationsBackend
from .directory import APPS, ASSIGN, ASSIGNMENTS, GRANT, GRANTS, SPS, USERS, Caller
from .exceptions import bad_request, conflict, no_backing_application, not_a_valid_reference, not_found

NO_ROLE = "00000000-0000-0000-0000-000000000000"  # the default access role of appRoleAssignment


def _body(body: Any, allowed: set[str], required: set[str], resource: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise bad_request("Empty Payload. JSON content expected.")
    for key in body:
        if key not in allowed and not key.startswith("@odata"):
            raise bad_request(f"Property '{key}' does not exist as a declared property or extension property.")
    for key in required:
        if not body.get(key):
            raise bad_request(f"Property '{key}' of resource '{resource}' is required and cannot be null.")
    return body


class GraphBackend(ApplicationsBackend):
    # -- service principals --------------------------------------------------------------------------------
    def create_service_principal(self, caller: Caller, body: Any) -> dict[str, Any]:
        caller.require_create()
        body = _body(body, {"appId", "tags", "notes", "description", "appRoleAssignmentRequired",
                            "accountEnabled"}, {"appId"}, "ServicePrincipal")
        app = self.app_by_app_id(body["appId"])
        if app is None:
            # Graph's answer while a new application is still replicating (docs/local-tenant.md, "Fidelity").
            raise no_backing_application(body["appId"])
        caller.require_write(app)
        if self.find(SPS, "appId", body["appId"], any_visibility=True):
            raise conflict("The service principal cannot be created, updated, or restored because the service "
                           f"principal name {body['appId']} is already in use.")
        extra = {k: body[k] for k in ("tags", "notes", "description", "appRoleAssignmentRequired",
                                      "accountEnabled") if k in body}
        sp = models.new_service_principal(app, app_id=app["appId"], now=self.now(),
                                          visible_at=self.visible_at(), owner=caller.oid, extra=extra)
        return self.sp_view(self.save(SPS, sp))

    def _sp(self, addr: tuple[str, str]) -> dict[str, Any]:
        return self.require(SPS, addr[0], addr[1])

    def get_service_principal(self, caller: Caller, addr: tuple[str, str]) -> dict[str, Any]:
        sp = self._sp(addr)
        if caller.oid != sp["id"]:
            caller.require_read(sp)
        return self.sp_view(sp)

    def list_service_principals(self, caller: Caller) -> list[dict[str, Any]]:
        return [self.sp_view(sp) for sp in self.objects(SPS) if caller.may_read(sp) or caller.oid == sp["id"]]

    def delete_service_principal(self, caller: Caller, addr: tuple[str, str]) -> None:
        sp = self._sp(addr)
        caller.require_write(sp)
        self.remove_service_principal(sp)

    # -- app role assignments ------------------------------------------------------------------------------
    def create_assignment(self, caller: Caller, resource_id: str, body: Any) -> dict[str, Any]:
        caller.require(ASSIGN)
        body = _body(body, {"principalId", "resourceId", "appRoleId"}, {"principalId", "resourceId"},
                     "AppRoleAssignment")
        resource = self.sp_view(self.require(SPS, "id", resource_id))
        if body["resourceId"] != resource_id:
            raise bad_request("Resource id in the request body does not match the service principal.")
        principal = self.principal(body["principalId"])
        if principal is None:
            # Graph answers 400, not 404, for a principal it has not seen (yet): docs "Fidelity".
            raise not_a_valid_reference()
        role_id = body.get("appRoleId") or NO_ROLE
        if role_id != NO_ROLE and role_id not in {r["id"] for r in resource["appRoles"]}:
            raise bad_request("Permission being assigned was not found on application")
        if any(a["principalId"] == principal["id"] and a["resourceId"] == resource_id and a["appRoleId"] == role_id
               for a in self.store.values(ASSIGNMENTS)):
            raise bad_request("Permission being assigned already exists on the object")
        is_user = "userPrincipalName" in principal
        if not is_user:
            principal = self.sp_view(principal)  # its displayName comes from its application
        a = {"id": models.assignment_id(principal["id"]), "appRoleId": role_id,
             "createdDateTime": models.iso(self.now()), "deletedDateTime": None,
             "principalDisplayName": principal.get("displayName"), "principalId": principal["id"],
             "principalType": "User" if is_user else "ServicePrincipal",
             "resourceDisplayName": resource["displayName"], "resourceId": resource_id,
             "_visibleAt": self.visible_at()}
        return models.public(self.save(ASSIGNMENTS, a))

    def list_assigned_to(self, caller: Caller, resource_id: str) -> list[dict[str, Any]]:
        caller.require(ASSIGN, "Application.Read.All", "Application.ReadWrite.All")
        self.require(SPS, "id", resource_id)
        return [models.public(a) for a in self.objects(ASSIGNMENTS) if a["resourceId"] == resource_id]

    def list_assignments_of(self, caller: Caller, principal_id: str) -> list[dict[str, Any]]:
        if caller.oid != principal_id:
            caller.require(ASSIGN, "Application.Read.All", "Application.ReadWrite.All")
        self.require(SPS, "id", principal_id)
        return [models.public(a) for a in self.objects(ASSIGNMENTS) if a["principalId"] == principal_id]

    def delete_assignment(self, caller: Caller, resource_id: str, assignment_id: str) -> None:
        caller.require(ASSIGN)
        a = self.require(ASSIGNMENTS, "id", assignment_id)
        if a["resourceId"] != resource_id:
            raise not_found(assignment_id)
        self.store.delete(ASSIGNMENTS, assignment_id)

    # -- delegated permission grants -----------------------------------------------------------------------
    def create_grant(self, caller: Caller, body: Any) -> dict[str, Any]:
        caller.require(GRANT)
        body = _body(body, {"clientId", "consentType", "principalId", "resourceId", "scope", "startTime",
                            "expiryTime"}, {"clientId", "consentType", "resourceId"}, "OAuth2PermissionGrant")
        if body["consentType"] not in ("AllPrincipals", "Principal"):
            raise bad_request("Invalid value specified for property 'consentType'.")
        if (body["consentType"] == "Principal") != bool(body.get("principalId")):
            raise bad_request("principalId must be set exactly when consentType is Principal.")
        for key in ("clientId", "resourceId"):
            self.require(SPS, "id", body[key])
        if body.get("principalId") and self.find(USERS, "id", body["principalId"]) is None:
            raise not_found(body["principalId"])
        if any(g["clientId"] == body["clientId"] and g["resourceId"] == body["resourceId"]
               and g["consentType"] == body["consentType"] and g.get("principalId") == body.get("principalId")
               for g in self.store.values(GRANTS)):
            raise conflict("Permission entry already exists.")
        g = {"id": models.grant_id(body["clientId"], body["resourceId"], body.get("principalId")),
             "clientId": body["clientId"], "consentType": body["consentType"],
             "principalId": body.get("principalId"), "resourceId": body["resourceId"],
             "scope": body.get("scope") or "", "_visibleAt": self.visible_at()}
        return models.public(self.save(GRANTS, g))

    def list_grants(self, caller: Caller) -> list[dict[str, Any]]:
        caller.require(GRANT, "Application.Read.All", "Application.ReadWrite.All")
        return [models.public(g) for g in self.objects(GRANTS)]

    def get_grant(self, caller: Caller, grant_id: str) -> dict[str, Any]:
        caller.require(GRANT, "Application.Read.All", "Application.ReadWrite.All")
        return models.public(self.require(GRANTS, "id", grant_id))

    def update_grant(self, caller: Caller, grant_id: str, body: Any) -> None:
        caller.require(GRANT)
        body = _body(body, {"scope"}, set(), "OAuth2PermissionGrant")
        g = self.require(GRANTS, "id", grant_id)
        g["scope"] = body.get("scope") or ""
        self.save(GRANTS, g)

    def delete_grant(self, caller: Caller, grant_id: str) -> None:
        caller.require(GRANT)
        self.require(GRANTS, "id", grant_id)
        self.store.delete(GRANTS, grant_id)

    # -- owned objects -------------------------------------------------------------------------------------
    def owned_objects(self, caller: Caller, sp_id: str) -> list[dict[str, Any]]:
        owner = self._sp(("id", sp_id))
        if caller.oid != owner["id"]:
            caller.require("Application.Read.All", "Application.ReadWrite.All")
        out = [{"@odata.type": "#microsoft.graph.application", **models.render_application(a)}
               for a in self.objects(APPS) if sp_id in a["_owners"]]
        out += [{"@odata.type": "#microsoft.graph.servicePrincipal", **self.sp_view(s)}
                for s in self.objects(SPS) if sp_id in s["_owners"]]
        return out
