"""Generic OAuth 2.0 / OpenID Connect mechanics (RFC 6749, 7517, 7519, 7523, 7636), free of Entra
particulars, in the way msal keeps `oauth2cli` under its vendor layer."""
