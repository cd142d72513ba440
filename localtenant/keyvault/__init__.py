"""Azure Key Vault secrets data plane for one vault named `local`."""
