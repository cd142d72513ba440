"""Microsoft Entra ID v2 endpoints for one tenant, on top of the generic `oauth` layer."""
