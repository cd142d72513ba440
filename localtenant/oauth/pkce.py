"""Proof Key for Code Exchange (RFC 7636)."""
from __future__ import annotations

import hashlib
import hmac

from .keys import b64url


def s256(verifier: str) -> str:
    """RFC 7636 section 4.2: BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))."""
    return b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def verifier_matches(verifier: str, challenge: str) -> bool:
    # RFC 7636 section 4.1: the verifier is 43-128 characters of the unreserved set.
    if not 43 <= len(verifier) <= 128:
        return False
    return hmac.compare_digest(s256(verifier), challenge)
