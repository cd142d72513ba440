"""A local stand-in for Entra ID, Microsoft Graph, Key Vault and Azure RBAC on loopback (docs/local-tenant.md).
Never imported by production code."""
from .tenant import LocalTenant

__all__ = ["LocalTenant"]
