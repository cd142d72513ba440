"""Client authentication at the token endpoint (RFC 6749 section 2.3, RFC 7523 section 2.2).

Only the mechanics: which credential the request carries. Whether it is good is the vendor layer's call.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from urllib.parse import unquote_plus

import jwt

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass
class ClientCredential:
    client_id: str | None
    secret: str | None = None
    assertion: str | None = None
    assertion_type: str | None = None

    @property
    def presented(self) -> bool:
        return self.secret is not None or self.assertion is not None


def from_request(form: dict[str, str], authorization: str | None) -> ClientCredential:
    """RFC 6749 2.3.1 allows HTTP Basic (form-urlencoded id and secret) or the form body."""
    client_id, secret = form.get("client_id"), form.get("client_secret")
    if authorization and authorization.lower().startswith("basic "):
        try:
            user, _, pwd = base64.b64decode(authorization[6:].strip()).decode().partition(":")
            client_id, secret = unquote_plus(user), unquote_plus(pwd)
        except ValueError:
            pass
    return ClientCredential(client_id or None, secret or None, form.get("client_assertion") or None,
                            form.get("client_assertion_type") or None)


def unverified(assertion: str) -> tuple[dict, dict]:
    """Header and claims of a JWT before its key is known. Raises jwt.InvalidTokenError."""
    return jwt.get_unverified_header(assertion), jwt.decode(assertion, options={"verify_signature": False})
