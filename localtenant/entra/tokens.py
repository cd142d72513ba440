"""Entra access and id tokens: which claims, which version, which issuer; and validation for the resource
servers we emulate (Graph, Key Vault, ARM).

Claims follow the "Access token claims reference": v1.0 tokens carry `appid`/`appidacr` and the issuer
`https://sts.windows.net/{tid}/` with `aud` as requested; v2.0 tokens carry `azp`/`azpacr`, the discovery
issuer `{authority}/v2.0` and the resource's appId as `aud`. The resource picks the version through
`api.requestedAccessTokenVersion` (null or 1: v1.0; 2: v2.0); first-party resources issue v1.0.
"""
from __future__ import annotations

import base64
import hashlib
import json
import uuid
from typing import Any

import jwt

from ..oauth.keys import SigningKeys
from ..runtime import Clock, DirectorySettings, Issued

ID_TOKEN_LIFETIME = 3600


class InvalidToken(Exception):
    pass


class TokenIssuer:
    def __init__(self, keys: SigningKeys, clock: Clock, tenant_id: str, authority_host: str,
                 issued: Issued | None = None, settings: DirectorySettings | None = None) -> None:
        self.keys, self.clock, self.tenant_id, self.authority_host = keys, clock, tenant_id, authority_host
        self.issued = issued or Issued()
        self.settings = settings or DirectorySettings()

    @property
    def issuer_v2(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}/v2.0"

    @property
    def issuer_v1(self) -> str:
        return f"https://sts.windows.net/{self.tenant_id}/"

    def _times(self, lifetime: int) -> dict[str, int]:
        now = int(self.clock.now())
        return {"iat": now, "nbf": now, "exp": now + lifetime}

    def access_token(self, *, resource: dict[str, Any], audience: str, version: int, client_app_id: str,
                     acr: str, subject: dict[str, Any], roles: list[str], scopes: list[str],
                     extra: dict[str, Any] | None = None) -> tuple[str, int]:
        """`subject` is the service principal (app-only) or the user (delegated) the token is about."""
        lifetime = self.settings.access_token_lifetime
        claims: dict[str, Any] = {"aud": audience if version == 1 else resource["appId"],
                                  "iss": self.issuer_v1 if version == 1 else self.issuer_v2,
                                  **self._times(lifetime), "tid": self.tenant_id,
                                  "oid": subject["id"], "sub": subject["id"],
                                  "uti": base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode(),
                                  "ver": "1.0" if version == 1 else "2.0", "rh": "0.local."}
        claims.update({"appid": client_app_id, "appidacr": acr} if version == 1
                      else {"azp": client_app_id, "azpacr": acr})
        if "userPrincipalName" in subject:
            claims["sub"] = self._pairwise(subject["id"], client_app_id)
            claims["name"] = subject.get("displayName")
            claims.update({"upn": subject["userPrincipalName"], "unique_name": subject["userPrincipalName"]}
                          if version == 1 else {"preferred_username": subject["userPrincipalName"]})
        else:
            claims["idtyp"] = "app"
        if roles:
            claims["roles"] = roles
        if scopes:
            claims["scp"] = " ".join(scopes)
        claims.update(extra or {})
        token = self.keys.sign(claims)
        self.issued.add("accessTokens", token)
        return token, lifetime

    def id_token(self, *, user: dict[str, Any], client_app_id: str, nonce: str | None) -> str:
        claims = {"aud": client_app_id, "iss": self.issuer_v2, **self._times(ID_TOKEN_LIFETIME),
                  "tid": self.tenant_id, "oid": user["id"], "sub": self._pairwise(user["id"], client_app_id),
                  "name": user.get("displayName"), "preferred_username": user["userPrincipalName"], "ver": "2.0"}
        if nonce:
            claims["nonce"] = nonce
        return self.keys.sign(claims)

    def client_info(self, user: dict[str, Any]) -> str:
        """msal asks for client_info=1: base64url JSON of the user's uid and home tenant."""
        raw = json.dumps({"uid": user["id"], "utid": self.tenant_id}).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def _pairwise(self, oid: str, app_id: str) -> str:
        # `sub` is unique per user and application (pairwise), unlike `oid`.
        return base64.urlsafe_b64encode(hashlib.sha256(f"{oid}:{app_id}".encode()).digest()).rstrip(b"=").decode()

    def validate(self, token: str, audiences: set[str]) -> dict[str, Any]:
        """What a resource server checks: our signature, our issuer, its audience, the time window."""
        try:
            claims = self.keys.verify(token)
        except jwt.InvalidTokenError as e:
            raise InvalidToken(f"Signature validation failed: {e}") from None
        if claims.get("iss") not in (self.issuer_v1, self.issuer_v2):
            raise InvalidToken("Invalid issuer.")
        if str(claims.get("aud", "")).rstrip("/").lower() not in {a.rstrip("/").lower() for a in audiences}:
            raise InvalidToken("Invalid audience.")
        now = self.clock.now()
        if claims.get("exp", 0) <= now:
            raise InvalidToken("Lifetime validation failed, the token is expired.")
        if claims.get("nbf", 0) > now + 300:
            raise InvalidToken("Lifetime validation failed, the token is not yet valid.")
        return claims
