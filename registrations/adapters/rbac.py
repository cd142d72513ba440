"""Azure RBAC role assignments over ARM REST (api-version 2022-04-01)."""

from __future__ import annotations

import uuid
from urllib.parse import quote

from ._rest import RestClient
from .errors import ConflictError

API_VERSION = "2022-04-01"
_ASSIGNMENT_NAMESPACE = uuid.UUID("1b8a3c0e-9a53-4d1f-8d7e-3c2b1a0f9e8d")


def assignment_name(scope: str, role_definition_id: str, principal_id: str) -> str:
    """The same (scope, role, principal) always gets the same assignment name, so a retried PUT is a no-op."""
    return str(uuid.uuid5(_ASSIGNMENT_NAMESPACE, f"{scope.lower()}|{role_definition_id}|{principal_id}"))


class RbacClient:
    def __init__(self, rest: RestClient) -> None:
        self._rest = rest

    @staticmethod
    def _role_definition(scope: str, role_id: str) -> str:
        subscription = scope.split("/")[2]
        return f"/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{role_id}"

    def assign(self, scope: str, role_id: str, principal_id: str, *,
               principal_type: str | None = "ServicePrincipal", condition: str | None = None) -> str:
        """Give a principal a role at a scope; returns the assignment's id. Existing is success. A
        `condition` (ABAC, version 2.0) narrows what the role allows."""
        name = assignment_name(scope, role_id, principal_id)
        path = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"
        body = {
            "properties": {
                "roleDefinitionId": self._role_definition(scope, role_id),
                "principalId": principal_id,
            }
        }
        if principal_type:
            # Saying what the principal is lets ARM skip its directory look-up, which fails while a new
            # service principal is still replicating.
            body["properties"]["principalType"] = principal_type
        if condition:
            body["properties"].update(condition=condition, conditionVersion="2.0")
        try:
            self._rest.call("createRoleAssignment", "PUT", quote(path), body=body,
                            params={"api-version": API_VERSION})
        except ConflictError as exc:
            if exc.code != "RoleAssignmentExists":
                raise
        return path

    def list_for_principal(self, scope: str, principal_id: str) -> list[dict]:
        path = quote(f"{scope}/providers/Microsoft.Authorization/roleAssignments")
        return list(self._rest.pages("listRoleAssignments", path,
                                     {"api-version": API_VERSION, "$filter": f"principalId eq '{principal_id}'"}))

    def list_at_scope(self, scope: str) -> list[dict]:
        """Assignments made exactly at this scope (not inherited from above)."""
        path = quote(f"{scope}/providers/Microsoft.Authorization/roleAssignments")
        return [a for a in self._rest.pages("listRoleAssignments", path,
                                            {"api-version": API_VERSION, "$filter": "atScope()"})
                if (a.get("properties") or {}).get("scope", "").lower() == scope.lower()]

    def delete(self, assignment_id: str) -> bool:
        status, _, _ = self._rest.call(
            "deleteRoleAssignment", "DELETE", quote(assignment_id), params={"api-version": API_VERSION},
            ok_missing=True,
        )
        return status == 200  # ARM answers 204 when there was nothing to delete
