"""The App Service managed identity endpoint (IDENTITY_ENDPOINT + IDENTITY_HEADER), plain HTTP on loopback."""
