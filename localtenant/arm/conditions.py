"""Role assignment conditions that constrain which roles a delegate may assign (Azure ABAC).

The one shape understood is Microsoft's documented "Constrain roles" example (learn.microsoft.com, Azure
RBAC, "Examples to delegate Azure role assignment management with conditions"): for each of the actions
Microsoft.Authorization/roleAssignments/write and /delete, a clause

    ( ( !(ActionMatches{'<action>'}) ) OR ( @<source>[Microsoft.Authorization/roleAssignments:RoleDefinitionId]
      ForAnyOfAnyValues:GuidEquals {<guid>, ...} ) )

joined by AND, where the source is Request for write and Resource for delete ("Azure conditions: actions and
attributes"). An action no clause names is not constrained. Anything else is not understood, and a condition
that is not understood allows nothing here: stricter than Azure, never kinder.
"""
from __future__ import annotations

import re

_ATTRIBUTE = "Microsoft.Authorization/roleAssignments:RoleDefinitionId"
_SOURCE = {"write": "Request", "delete": "Resource"}
_CLAUSE = re.compile(
    r"\(\s*\(\s*!\s*\(\s*ActionMatches\s*\{\s*'Microsoft\.Authorization/roleAssignments/(write|delete)'\s*\}\s*\)"
    r"\s*\)\s*OR\s*\(\s*@(Request|Resource)\[" + re.escape(_ATTRIBUTE) + r"\]\s+ForAnyOfAnyValues:GuidEquals"
    r"\s*\{([0-9a-fA-F,\s-]*)\}\s*\)\s*\)", re.IGNORECASE)


def allowed_roles(condition: str) -> dict[str, set[str]] | None:
    """action ("write"/"delete") -> the role GUIDs it may use; None when the condition is not understood."""
    found: dict[str, set[str]] = {}
    rest = condition
    for match in _CLAUSE.finditer(condition):
        action, source, guids = match.group(1).lower(), match.group(2), match.group(3)
        if source.lower() != _SOURCE[action].lower() or action in found:
            return None
        found[action] = {g.strip().lower() for g in guids.split(",") if g.strip()}
        rest = rest.replace(match.group(0), " ")
    if not found or re.sub(r"[\s()]|\bAND\b", "", rest, flags=re.IGNORECASE):
        return None
    return found


def permits(condition: str | None, action: str, role_guid: str | None) -> bool:
    """Whether an assignment with this condition lets its holder `action` an assignment of `role_guid`
    (None: there is no assignment to judge, as when deleting one that does not exist)."""
    if not condition:
        return True
    allowed = allowed_roles(condition)
    if allowed is None:
        return False
    return action not in allowed or role_guid is None or role_guid.lower() in allowed[action]
