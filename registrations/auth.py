"""Who is calling: a bearer token from Entra ID, validated here (signature via JWKS, issuer, audience, tenant,
expiry), or, only where the platform says Easy Auth is on, the principal Easy Auth forwards.

A forged ``X-MS-CLIENT-PRINCIPAL`` header is never trusted: outside Easy Auth it is ignored and a request
that carries it without a valid token is refused and logged as suspicious.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import jwt

from .manifest import Caller
from .problems import Unauthenticated
from .settings import Settings

log = logging.getLogger("registrations.auth")

LEEWAY_SECONDS = 120
JWKS_MIN_REFRESH_SECONDS = 0.1
PRINCIPAL_HEADER = "x-ms-client-principal"


class JwksCache:
    """Signing keys of the tenant, from its discovery document; refreshed when a token names a kid we have
    not seen (key rollover). A kid a refresh did not find is remembered, and refreshes are spaced, so tokens
    with made-up kids cannot turn into a fetch flood against the authority."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._keys: dict[str, Any] = {}
        self._missing: set[str] = set()
        self._fetched_at = float("-inf")
        self._lock = threading.Lock()

    def key(self, kid: str) -> Any:
        with self._lock:
            if (kid not in self._keys and kid not in self._missing
                    and time.monotonic() - self._fetched_at >= JWKS_MIN_REFRESH_SECONDS):
                self._refresh()
                if kid not in self._keys:
                    if len(self._missing) > 1000:
                        self._missing.clear()
                    self._missing.add(kid)
            return self._keys.get(kid)

    def _refresh(self) -> None:
        import requests

        session = requests.Session()
        session.trust_env = False
        verify = self._settings.connection_verify
        discovery = f"{self._settings.authority}/v2.0/.well-known/openid-configuration"
        jwks_uri = session.get(discovery, timeout=10, verify=verify).json()["jwks_uri"]
        document = session.get(jwks_uri, timeout=10, verify=verify).json()
        self._keys = {k["kid"]: jwt.PyJWK(k).key for k in document.get("keys", []) if k.get("kid")}
        self._missing.clear()
        self._fetched_at = time.monotonic()


class Authenticator:
    def __init__(self, settings: Settings, *, easy_auth: bool = False) -> None:
        self.settings = settings
        self.easy_auth = easy_auth
        self._jwks = JwksCache(settings)
        tid = settings.tenant_id
        self.issuers = {f"{settings.authority}/v2.0", f"https://sts.windows.net/{tid}/"}
        self.audiences = [a for a in (settings.api_client_id, settings.api_audience) if a]

    def caller(self, headers: Mapping[str, str]) -> Caller:
        auth = headers.get("authorization") or ""
        has_principal = bool(headers.get(PRINCIPAL_HEADER))
        if self.easy_auth and has_principal:
            return self._from_easy_auth(headers[PRINCIPAL_HEADER])
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            if has_principal:
                log.warning("suspicious request: X-MS-CLIENT-PRINCIPAL without Easy Auth and without a token")
            raise Unauthenticated("send an Entra ID access token in the Authorization header (Bearer)")
        try:
            claims = self._validate(token.strip())
        except jwt.PyJWTError as exc:
            if has_principal:
                log.warning("suspicious request: X-MS-CLIENT-PRINCIPAL with an invalid token")
            raise Unauthenticated(f"the bearer token was refused: {exc}") from None
        return _caller_from_claims(claims)

    def _validate(self, token: str) -> dict:
        if not self.audiences:
            raise jwt.InvalidTokenError("the API's audience is not configured (API_CLIENT_ID/API_AUDIENCE)")
        header = jwt.get_unverified_header(token)
        if header.get("alg") != "RS256":
            raise jwt.InvalidAlgorithmError("only RS256 tokens are accepted")
        if not header.get("kid"):
            raise jwt.InvalidKeyError("the token names no signing key (kid)")
        key = self._jwks.key(header["kid"])
        if key is None:
            raise jwt.InvalidKeyError("the token is signed with a key the tenant does not publish")
        claims = jwt.decode(
            token, key, algorithms=["RS256"], audience=self.audiences, leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud", "tid", "oid"]},
        )
        if claims["iss"] not in self.issuers:
            raise jwt.InvalidIssuerError("the token was issued by another authority")
        if claims["tid"] != self.settings.tenant_id:
            raise jwt.InvalidTokenError("the token is from another tenant")
        return claims

    def _from_easy_auth(self, encoded: str) -> Caller:
        try:
            principal = json.loads(base64.b64decode(encoded))
            claims: dict[str, Any] = {}
            for claim in principal.get("claims", []):
                claims.setdefault(claim["typ"], []).append(claim["val"])
        except (ValueError, KeyError, TypeError):
            raise Unauthenticated("the Easy Auth principal could not be read") from None
        role_typ = principal.get("role_typ", "roles")
        oid = (claims.get("http://schemas.microsoft.com/identity/claims/objectidentifier")
               or claims.get("oid") or [""])[0]
        if not oid:
            raise Unauthenticated("the Easy Auth principal has no object id")
        name = (claims.get("name") or claims.get("appid") or claims.get("azp") or [oid])[0]
        return Caller(object_id=oid, name=name, roles=frozenset(claims.get(role_typ, []) + claims.get("roles", [])),
                      app_id=(claims.get("appid") or claims.get("azp") or [None])[0])


def _caller_from_claims(claims: dict) -> Caller:
    app_id = claims.get("azp") or claims.get("appid")
    name = claims.get("name") or claims.get("preferred_username") or claims.get("upn") or app_id or claims["oid"]
    return Caller(object_id=claims["oid"], name=name, roles=frozenset(claims.get("roles") or []), app_id=app_id)
