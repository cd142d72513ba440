"""Who the client is and whether its credential is good, the Entra way.

- A client counts as public for a request when the redirect URI it uses is registered under `spa` or
  `publicClient`, or when `isFallbackPublicClient` is true ("Public client and confidential client
  applications"); a public client must not present a credential (AADSTS700025), a confidential one must
  (AADSTS7000218).
- Secrets are compared with the stored salted hash; one past its endDateTime is AADSTS7000222.
- A certificate assertion names its certificate by `x5t` (SHA-1) or `x5t#S256` thumbprint, which must be a
  registered keyCredential ("Microsoft identity platform certificate credentials"); its `aud` is the token
  endpoint and `iss` = `sub` = the client id.
- A federated assertion comes from a trusted external issuer and must match a federatedIdentityCredential's
  issuer, subject and audience exactly ("Workload identity federation").
"""
from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit

import jwt
from cryptography import x509

from ..graph.backend import GraphBackend
from ..graph.objects import parse_iso, password_hash
from ..oauth import client_auth
from ..oauth.keys import SigningKeys
from . import exceptions as ex

FEDERATED_ISSUER = "https://issuer.local.test"


PLATFORMS = ("web", "spa", "publicClient")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1")


def _same_redirect(registered: str, uri: str) -> bool:
    """Exact match, except that the port of an http loopback redirect URI is ignored ("Redirect URI (reply
    URL) restrictions", localhost exceptions, after RFC 8252 7.3 and 8.3): native apps listen on ephemeral
    ports."""
    if registered == uri:
        return True
    r, u = urlsplit(registered), urlsplit(uri)
    return (r.scheme == u.scheme == "http" and r.hostname in LOOPBACK_HOSTS and r.hostname == u.hostname
            and (r.path, r.query) == (u.path, u.query))


def registered_on(app: dict[str, Any], platform: str, uri: str | None) -> bool:
    return bool(uri) and any(_same_redirect(r, uri) for r in app[platform]["redirectUris"])


def is_public(app: dict[str, Any], redirect_uri: str | None) -> bool:
    if app.get("isFallbackPublicClient"):
        return True
    return registered_on(app, "spa", redirect_uri) or registered_on(app, "publicClient", redirect_uri)


def registered_redirect(app: dict[str, Any], uri: str) -> bool:
    return any(registered_on(app, platform, uri) for platform in PLATFORMS)


class ClientAuthenticator:
    def __init__(self, directory: GraphBackend, external_keys: SigningKeys, authority_host: str) -> None:
        self.directory, self.external_keys, self.authority_host = directory, external_keys, authority_host

    def app(self, client_id: str | None) -> dict[str, Any]:
        if not client_id:
            raise ex.missing_parameter("client_id")
        app = self.directory.app_by_app_id(client_id)
        if app is None:
            raise ex.unknown_app(client_id, self.directory.tenant_id)
        return app

    def authenticate(self, app: dict[str, Any], cred: client_auth.ClientCredential, *, public: bool) -> str:
        """The `appidacr`/`azpacr` value: "0" public client, "1" secret, "2" certificate or assertion."""
        if public:
            if cred.presented:
                raise ex.public_client_with_secret()
            return "0"
        if not cred.presented:
            raise ex.confidential_without_secret()
        if cred.secret is not None:
            self._check_secret(app, cred.secret)
            return "1"
        if cred.assertion_type != client_auth.JWT_BEARER:
            raise ex.EntraError(90014, "invalid_request", "The request body must contain the following "
                                "parameter: 'client_assertion_type'.")
        try:
            header, claims = client_auth.unverified(cred.assertion)
        except jwt.InvalidTokenError:
            raise ex.EntraError(50027, "invalid_request", "JWT token is invalid or malformed.") from None
        if claims.get("iss") == FEDERATED_ISSUER:
            self._check_federated(app, cred.assertion, claims)
        else:
            self._check_certificate(app, cred.assertion, header)
        return "2"

    def _check_secret(self, app: dict[str, Any], secret: str) -> None:
        now = self.directory.now()
        for cred in app["passwordCredentials"]:
            # A new secret is not accepted until it has replicated (AADSTS7000215 meanwhile).
            if self.directory.visible(cred) and password_hash(cred["_salt"], secret) == cred["_hash"]:
                if parse_iso(cred["endDateTime"], "endDateTime") <= now:
                    raise ex.expired_client_secret(app["appId"])
                return
        raise ex.invalid_client_secret(app["appId"])

    def _check_certificate(self, app: dict[str, Any], assertion: str, header: dict[str, Any]) -> None:
        # x5t values are base64url (RFC 7515 4.1.7); senders differ on padding.
        x5t, x5t256 = (str(header.get(k) or "").rstrip("=") or None for k in ("x5t", "x5t#S256"))
        match = next((k for k in app["keyCredentials"] if self.directory.visible(k) and k.get("key")
                      and (x5t and k["_x5t"] == x5t or x5t256 and k["_x5t256"] == x5t256)), None)
        if match is None:
            raise ex.EntraError(700027, "invalid_client", "The certificate with identifier used to sign the "
                                "client assertion is not registered on application. "
                                f"[Reason - The key was not found., Thumbprint of key used by client: "
                                f"'{x5t or x5t256}']", status=401)
        cert = x509.load_der_x509_certificate(base64.b64decode(match["key"]))
        now = self.directory.now()
        if not cert.not_valid_before_utc.timestamp() <= now <= cert.not_valid_after_utc.timestamp():
            raise ex.EntraError(700027, "invalid_client", "Client assertion failed signature validation: the "
                                "certificate has expired.", status=401)
        try:
            claims = jwt.decode(assertion, cert.public_key(), algorithms=["RS256", "PS256"],
                                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                         "verify_aud": False})
        except jwt.InvalidTokenError:
            raise ex.EntraError(700027, "invalid_client", "Client assertion contains an invalid signature.",
                                status=401) from None
        if claims.get("iss") != app["appId"] or claims.get("sub") != app["appId"]:
            raise ex.EntraError(700021, "invalid_client", "Client assertion application identifier doesn't "
                                "match 'client_id' parameter.", status=401)
        self._check_window(claims)
        if not str(claims.get("aud", "")).startswith(self.authority_host):
            raise ex.EntraError(700027, "invalid_client", "The audience claim of the "
                                "client assertion must be the token endpoint.", status=401)

    def _check_window(self, claims: dict[str, Any]) -> None:
        now = self.directory.now()
        if claims.get("exp", 0) <= now or claims.get("nbf", 0) > now + 300:
            raise ex.EntraError(700024, "invalid_client", "Client assertion is not within its valid time "
                                "range.", status=401)

    def _check_federated(self, app: dict[str, Any], assertion: str, claims: dict[str, Any]) -> None:
        try:
            self.external_keys.verify(assertion)
        except jwt.InvalidTokenError:
            raise ex.EntraError(700212, "invalid_client", "The signature of the federated assertion could "
                                "not be verified with the issuer's keys.", status=401) from None
        self._check_window(claims)
        auds = claims.get("aud")
        auds = auds if isinstance(auds, list) else [auds]
        for fic in app["_fics"]:
            if (self.directory.visible(fic) and fic["issuer"] == claims["iss"]
                    and fic["subject"] == claims.get("sub") and fic["audiences"][0] in auds):
                return
        raise ex.EntraError(70021, "invalid_request", "No matching federated identity record found for presented "
                            f"assertion. Assertion Issuer: '{claims['iss']}'. Assertion Subject: "
                            f"'{claims.get('sub')}'. Assertion Audience: '{','.join(map(str, auds))}'.")
