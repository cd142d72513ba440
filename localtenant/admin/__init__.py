"""Loopback-only admin endpoints on the login origin (docs/local-tenant.md, "Admin endpoints")."""
