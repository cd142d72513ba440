"""Azure Resource Manager: the Microsoft.Authorization role assignments subset (Azure RBAC)."""
