"""Role assignments at any scope, and the RBAC checks other services ask for. No HTTP.

PUT semantics from "Assign Azure roles using the REST API": the name is a GUID chosen by the caller; an
assignment of the same role to the same principal at the same scope is 409 RoleAssignmentExists; setting
principalType lets a just-created principal be assigned before it has replicated.
"""
from __future__ import annotations

import uuid
from typing import Any

from ..graph.backend import GraphBackend
from ..graph.objects import SPS, USERS, iso
from . import conditions, roles
from .exceptions import ArmError, authorization_failed

TABLE = "roleAssignments"
PROVIDER = "/providers/Microsoft.Authorization/roleAssignments/"


class ArmBackend:
    def __init__(self, directory: GraphBackend, subscription_id: str) -> None:
        self.directory, self.subscription_id = directory, subscription_id
        self.store = directory.store

    def assignments_for(self, principal_id: str) -> list[dict[str, Any]]:
        return [a for a in self.directory.objects(TABLE) if a["properties"]["principalId"] == principal_id]

    def has(self, principal_id: str, scope: str, predicate) -> bool:
        return any(roles.covers(a["properties"]["scope"], scope)
                   and predicate(roles.ROLES.get(roles.role_guid(a["properties"]["roleDefinitionId"]), {}))
                   for a in self.assignments_for(principal_id))

    def require_assign(self, oid: str, scope: str, action: str, role_guid: str | None) -> None:
        """`action` (write or delete) an assignment of `role_guid` at `scope`: a role that may assign, at or
        above the scope, whose condition (if any) allows that role (conditions.py)."""
        for a in self.assignments_for(oid):
            p = a["properties"]
            if (roles.covers(p["scope"], scope)
                    and roles.ROLES.get(roles.role_guid(p["roleDefinitionId"]), {}).get("assign")
                    and conditions.permits(p.get("condition"), action, role_guid)):
                return
        raise authorization_failed(oid, f"Microsoft.Authorization/roleAssignments/{action}", scope)

    def require_read(self, oid: str, scope: str) -> None:
        if not self.has(oid, scope, lambda r: bool(r)):
            raise authorization_failed(oid, "Microsoft.Authorization/roleAssignments/read", scope)

    def put(self, oid: str | None, scope: str, name: str, body: Any) -> dict[str, Any]:
        if oid is not None:
            requested = ((body.get("properties") if isinstance(body, dict) else None) or {}).get("roleDefinitionId")
            self.require_assign(oid, scope, "write", roles.role_guid(requested) if isinstance(requested, str)
                                else "")
        try:
            name = str(uuid.UUID(name))
        except ValueError:
            raise ArmError(400, "InvalidRoleAssignmentId", f"The role assignment ID '{name}' is not valid. The "
                           "role assignment ID must be a GUID.") from None
        props = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(props, dict) or not props.get("roleDefinitionId") or not props.get("principalId"):
            raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                           "deserialized: properties.roleDefinitionId and properties.principalId are required.")
        guid = roles.role_guid(props["roleDefinitionId"])
        if guid not in roles.ROLES:
            raise ArmError(400, "RoleDefinitionDoesNotExist", f"The specified role definition with ID '{guid}' "
                           "does not exist.")
        principal_id = props["principalId"]
        known = (self.directory.find(SPS, "id", principal_id, any_visibility=bool(props.get("principalType")))
                 or self.directory.find(USERS, "id", principal_id))
        if known is None:
            raise ArmError(400, "PrincipalNotFound", f"Principal {principal_id.replace('-', '')} does not exist in "
                           f"the directory {self.directory.tenant_id}. Check that you have the correct principal "
                           "ID. If you are creating this principal and then immediately assigning a role, this "
                           "error might be related to a replication delay. In this case, set the role assignment "
                           "principalType property to a value, such as ServicePrincipal, User, or Group.")
        key = f"{scope.rstrip('/').lower()}{PROVIDER.lower()}{name}"
        existing = self.store.get(TABLE, key)
        for a in self.store.values(TABLE):
            p = a["properties"]
            if (p["scope"].lower() == scope.rstrip("/").lower() and p["principalId"] == principal_id
                    and roles.role_guid(p["roleDefinitionId"]) == guid):
                raise ArmError(409, "RoleAssignmentExists", "The role assignment already exists.")
        if existing is not None:
            raise ArmError(400, "RoleAssignmentUpdateNotPermitted", "Tenant ID, application ID, principal ID, "
                           "and scope are not allowed to be updated.")
        now = iso(self.directory.now())
        a = {"properties": {"roleDefinitionId": roles.definition_id(self.subscription_id, guid),
                            "principalId": principal_id,
                            "principalType": props.get("principalType") or
                            ("User" if "userPrincipalName" in known else "ServicePrincipal"),
                            "scope": scope.rstrip("/") or "/", "condition": props.get("condition"),
                            "conditionVersion": props.get("conditionVersion"),
                            "description": props.get("description"), "createdOn": now, "updatedOn": now,
                            "createdBy": oid, "updatedBy": oid, "delegatedManagedIdentityResourceId": None},
             "id": f"{scope.rstrip('/')}{PROVIDER}{name}", "type": "Microsoft.Authorization/roleAssignments",
             "name": name, "_visibleAt": self.directory.visible_at() if oid else 0, "_key": key}
        self.store.put(TABLE, key, a)
        return a

    def get(self, oid: str, scope: str, name: str) -> dict[str, Any]:
        self.require_read(oid, scope)
        a = self.store.get(TABLE, f"{scope.rstrip('/').lower()}{PROVIDER.lower()}{name.lower()}")
        if a is None or not self.directory.visible(a):
            raise ArmError(404, "RoleAssignmentNotFound", "The role assignment '{}' is not found.".format(name))
        return a

    def delete(self, oid: str, scope: str, name: str) -> dict[str, Any] | None:
        key = f"{scope.rstrip('/').lower()}{PROVIDER.lower()}{name.lower()}"
        a = self.store.get(TABLE, key)
        found = a is not None and self.directory.visible(a)
        self.require_assign(oid, scope, "delete", roles.role_guid(a["properties"]["roleDefinitionId"]) if found
                            else None)
        if not found:
            return None
        return self.store.delete(TABLE, key)

    def list(self, oid: str, scope: str, filter_text: str | None) -> list[dict[str, Any]]:
        """No filter: at, above and below the scope. `atScope()`: at or above. `principalId eq '..'`."""
        self.require_read(oid, scope)
        text = (filter_text or "").strip()
        at_scope, principal = False, None
        for clause in [c.strip() for c in text.split(" and ")] if text else []:
            if clause.lower() == "atscope()":
                at_scope = True
            elif clause.lower().startswith("principalid eq '") and clause.endswith("'"):
                principal = clause[len("principalId eq '"):-1]
            elif clause.lower().startswith("assignedto('") and clause.endswith("')"):
                principal = clause[len("assignedTo('"):-2]
            else:
                raise ArmError(400, "UnsupportedQuery", f"The filter '{filter_text}' is not supported.")
        out = []
        for a in self.directory.objects(TABLE):
            p = a["properties"]
            above = roles.covers(p["scope"], scope)
            below = roles.covers(scope, p["scope"])
            if (above or below and not at_scope) and (principal is None or p["principalId"] == principal):
                out.append(a)
        return out

    # -- subscriptions and role definitions ---------------------------------------------------------------
    def _subscription_view(self) -> dict[str, Any]:
        return {"id": f"/subscriptions/{self.subscription_id}", "authorizationSource": "RoleBased",
                "managedByTenants": [], "subscriptionId": self.subscription_id,
                "tenantId": self.directory.tenant_id, "displayName": "Local subscription", "state": "Enabled",
                "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01",
                                         "quotaId": "PayAsYouGo_2014-09-01", "spendingLimit": "Off"}}

    def subscriptions(self, oid: str) -> list[dict[str, Any]]:
        """The subscriptions where the caller holds a role at the subscription or anywhere below it."""
        root = f"/subscriptions/{self.subscription_id}"
        mine = any(roles.covers(root, a["properties"]["scope"]) or roles.covers(a["properties"]["scope"], root)
                   for a in self.assignments_for(oid))
        return [self._subscription_view()] if mine else []

    def subscription(self, oid: str, subscription_id: str) -> dict[str, Any]:
        found = [s for s in self.subscriptions(oid) if s["subscriptionId"].lower() == subscription_id.lower()]
        if not found:
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{subscription_id}' could not be found.")
        return found[0]

    def _definition_view(self, guid: str) -> dict[str, Any]:
        role = roles.ROLES[guid]
        kind = "CustomRole" if role.get("custom") else "BuiltInRole"
        return {"properties": {"roleName": role["name"], "type": kind, "description": role["name"],
                               "assignableScopes": ["/"], "permissions": [], "createdOn": None, "updatedOn": None,
                               "createdBy": None, "updatedBy": None},
                "id": roles.definition_id(self.subscription_id, guid),
                "type": "Microsoft.Authorization/roleDefinitions", "name": guid}

    def role_definitions(self, oid: str, scope: str, filter_text: str | None) -> list[dict[str, Any]]:
        """`$filter`: `roleName eq '..'` (exact, case-insensitive) or `type eq 'BuiltInRole'`; anything else is
        refused rather than ignored."""
        self.require_read(oid, scope)
        text, name, built_in = (filter_text or "").strip(), None, False
        if text.lower().startswith("rolename eq '") and text.endswith("'"):
            name = text[len("roleName eq '"):-1].replace("''", "'")
        elif text and text.replace('"', "'").lower() != "type eq 'builtinrole'":
            raise ArmError(400, "UnsupportedQuery", f"The filter '{filter_text}' is not supported.")
        else:
            built_in = bool(text)
        return [self._definition_view(g) for g, r in roles.ROLES.items()
                if (name is None or r["name"].lower() == name.lower()) and not (built_in and r.get("custom"))]

    def role_definition(self, oid: str, scope: str, name: str) -> dict[str, Any]:
        self.require_read(oid, scope)
        if name.lower() not in roles.ROLES:
            raise ArmError(404, "RoleDefinitionDoesNotExist", f"The specified role definition with ID '{name}' "
                           "does not exist.")
        return self._definition_view(name.lower())
