"""Built-in role definitions we know, with the permissions this emulator checks ("Azure built-in roles").

`write` means Microsoft.Authorization/roleAssignments/write; `secrets` lists the Key Vault secret data
actions: get (getSecret), read (readMetadata: list, versions, deleted), write (set, update, delete,
recover, purge). `dicom` lists the DICOM data actions (Microsoft.HealthcareApis/workspaces/dicomservices/
resources/{read,write,delete}: DICOM Data Owner holds `resources/*`, DICOM Data Reader `resources/read`);
`resources` the control-plane actions on a DICOM service resource (Microsoft.HealthcareApis/workspaces/
dicomservices/{read,write}), which Owner and Contributor hold (`*`) and Reader reads (`*/read`).
"""
from __future__ import annotations

CORS_EDITOR = "2c0f6a61-8a3e-4f39-9d57-0c6f1b7e9a24"

ROLES: dict[str, dict] = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": {"name": "Owner", "assign": True, "secrets": set(),
                                             "resources": {"read", "write"}},
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": {"name": "User Access Administrator", "assign": True,
                                             "secrets": set()},
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": {"name": "Role Based Access Control Administrator", "assign": True,
                                             "secrets": set()},
    "b24988ac-6180-42a0-ab88-20f7382dd24c": {"name": "Contributor", "assign": False, "secrets": set(),
                                             "resources": {"read", "write"}},
    "acdd72a7-3385-48ef-bd42-f606fba81ae7": {"name": "Reader", "assign": False, "secrets": set(),
                                             "resources": {"read"}},
    "00482a5a-887f-4fb3-b363-3b7fe8e74483": {"name": "Key Vault Administrator", "assign": False,
                                             "secrets": {"get", "read", "write"}},
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": {"name": "Key Vault Secrets Officer", "assign": False,
                                             "secrets": {"get", "read", "write"}},
    "4633458b-17de-408a-b874-0445c86b69e6": {"name": "Key Vault Secrets User", "assign": False,
                                             "secrets": {"get", "read"}},
    "21090545-7ca7-4776-b22c-e363652d74d2": {"name": "Key Vault Reader", "assign": False, "secrets": {"read"}},
    "58a3b984-7adf-4c20-983a-32417c86fbc8": {"name": "DICOM Data Owner", "assign": False, "secrets": set(),
                                             "dicom": {"read", "write", "delete"}},
    "e89c7a3c-2f64-4fa1-a847-3e4c9ba4283a": {"name": "DICOM Data Reader", "assign": False, "secrets": set(),
                                             "dicom": {"read"}},
    # Table data actions only (Microsoft.Storage/storageAccounts/tableServices/tables/entities/*), which no
    # emulated service checks: the function app's registry is in Azurite, reached with its development key.
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": {"name": "Storage Table Data Contributor", "assign": False,
                                             "secrets": set()},
    # A custom role (its id is local), the least a principal needs to edit a DICOM service's CORS
    # configuration: Microsoft.HealthcareApis/workspaces/dicomservices/read and /write.
    CORS_EDITOR: {"name": "DICOM service CORS editor (custom)", "assign": False, "secrets": set(),
                  "resources": {"read", "write"}, "custom": True},
}
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
RBAC_ADMIN = "f58310d9-a9f6-439a-9e8d-f62e7b41a168"
SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"


def role_guid(role_definition_id: str) -> str:
    return role_definition_id.rstrip("/").rsplit("/", 1)[-1].lower()


def definition_id(subscription_id: str, guid: str) -> str:
    return f"/subscriptions/{subscription_id}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


def covers(assignment_scope: str, target: str) -> bool:
    """An assignment applies at its scope and every scope below it."""
    s, t = assignment_scope.rstrip("/").lower(), target.rstrip("/").lower()
    return s == "" or t == s or t.startswith(s + "/")
