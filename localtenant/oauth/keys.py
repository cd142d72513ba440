"""RS256 signing keys published as a JWK Set (RFC 7517), kept in the store so tokens survive a restart.

Each key is published as Entra publishes its own ("Access tokens", validate the signing key issuer; the
keys document of login.microsoftonline.com): `kty`, `use`, `kid`, `x5t` (= kid, the base64url SHA-1
thumbprint of the key's self-signed certificate), `n`, `e`, `x5c` (that certificate, base64 DER) and
`issuer`, and no `alg`.

Rotation adds a key and makes it current; earlier keys stay published, as Entra keeps a retired key in its
JWKS for a while so tokens it already issued still verify.
"""
from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.hazmat.primitives import hashes

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ..store import Store
from ..tls import _builder

CERT_NAME = "accounts.accesscontrol.windows.net"  # the subject of Entra's own signing certificates
CERT_DAYS = 5 * 365


def _certificate(key) -> bytes:
    """A self-signed certificate (DER) for a signing key, as Entra publishes in x5c."""
    return _builder(CERT_NAME, CERT_NAME, key.public_key(), CERT_DAYS).sign(key, hashes.SHA256()).public_bytes(
        serialization.Encoding.DER)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_uint(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


# Tokens whose signature verified, with their claims. A token is immutable and a published key is never
# withdrawn (rotation keeps earlier keys), so a signature that verified once always will: checking it again
# on every call (PyJWT's parse and RSA check, ~0.2 ms, a third of a Graph handler) changes nothing. Time,
# audience and issuer are still checked by the caller on every call. Bounded; cleared whole when full.
VERIFIED_CACHE_SIZE = 4096


class SigningKeys:
    def __init__(self, store: Store, table: str) -> None:
        self.store, self.table = store, table
        self._cache: dict[str, Any] = {}
        self._verified: dict[str, dict[str, Any]] = {}

    def ensure(self) -> None:
        if not self.store.table(self.table):
            self.rotate()

    def rotate(self) -> str:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = _certificate(key)
        kid = b64url(hashlib.sha1(cert).digest())  # Entra's kid and x5t: the certificate's SHA-1 thumbprint
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        order = len(self.store.table(self.table))
        self.store.put(self.table, kid, {"kid": kid, "pem": pem, "order": order,
                                         "x5c": base64.b64encode(cert).decode()})
        return kid

    def _x5c(self, entry: dict[str, Any]) -> str:
        """The key's certificate; a key stored before certificates were kept gets one now (its kid stays)."""
        if not entry.get("x5c"):
            entry = {**entry, "x5c": base64.b64encode(_certificate(self._private(entry["kid"]))).decode()}
            self.store.put(self.table, entry["kid"], entry)
        return entry["x5c"]

    def _private(self, kid: str):
        if kid not in self._cache:
            entry = self.store.get(self.table, kid)
            if entry is None:
                return None
            self._cache[kid] = serialization.load_pem_private_key(entry["pem"].encode(), password=None)
        return self._cache[kid]

    @property
    def current_kid(self) -> str:
        return max(self.store.values(self.table), key=lambda e: e["order"])["kid"]

    def jwks(self, issuer: str) -> dict[str, Any]:
        keys = []
        for entry in sorted(self.store.values(self.table), key=lambda e: -e["order"]):
            pub = self._private(entry["kid"]).public_key().public_numbers()
            keys.append({"kty": "RSA", "use": "sig", "kid": entry["kid"], "x5t": entry["kid"],
                         "n": b64url_uint(pub.n), "e": b64url_uint(pub.e), "x5c": [self._x5c(entry)],
                         "issuer": issuer})
        return {"keys": keys}

    def sign(self, claims: dict[str, Any]) -> str:
        kid = self.current_kid
        return jwt.encode(claims, self._private(kid), algorithm="RS256",
                          headers={"typ": "JWT", "kid": kid, "x5t": kid})

    def verify(self, token: str) -> dict[str, Any]:
        """Checks the signature against any published key; the caller checks time, audience and issuer
        against the tenant's clock. Raises jwt.InvalidTokenError. Returns a new dict; its values (the list
        of roles...) are shared with the cache: read them, do not change them."""
        claims = self._verified.get(token)
        if claims is None:
            kid = jwt.get_unverified_header(token).get("kid")
            key = self._private(kid) if kid else None
            if key is None:
                raise jwt.InvalidTokenError("unknown signing key")
            claims = jwt.decode(token, key.public_key(), algorithms=["RS256"],
                                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                         "verify_aud": False})
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = claims
        return dict(claims)

    def clear_cache(self) -> None:
        self._cache.clear()
        self._verified.clear()
